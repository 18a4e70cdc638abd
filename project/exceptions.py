"""One exception root for Shepherd; views, commands and tasks translate these."""


class ShepherdError(Exception):
    """Root of every error Shepherd raises on purpose."""


class ValidationError(ShepherdError):
    """Input was rejected before anything changed (bad work type, payload, priority...)."""


class NotFound(ShepherdError):
    """An id that does not name a row (or one the caller may not see)."""


class IllegalTransition(ShepherdError):
    """The requested state change is not allowed from the item's current state."""


class HandlerError(ShepherdError):
    """Raised by handlers to say how a failure should be treated."""


class TransientError(HandlerError):
    """The attempt failed for a reason that may pass: retry while attempts remain."""


class PermanentError(HandlerError):
    """Retrying cannot help: dead-letter the item now."""


class Cancelled(HandlerError):
    """Raised by ctx.check_cancelled() when the item was cancelled or superseded."""
