from django.core.management.base import BaseCommand

from api.models import ApiToken
from api.services import api_token_create, api_tokens_revoke, user_by_username
from project.commands import BadInput
from project.exceptions import ShepherdError


class Command(BaseCommand):
    help = "Create or revoke API tokens. `create USER` prints a new token once; `revoke USER` revokes them."

    def add_arguments(self, parser):
        verbs = parser.add_subparsers(dest="verb", required=True, metavar="create|revoke|list")
        create = verbs.add_parser("create", help="Print a new token for USER (shown only now).")
        create.add_argument("user")
        create.add_argument("--name", default="cli", help="What the token is for (default: cli).")
        create.add_argument("--rate-limit", type=int, default=None, help="Requests per minute for this token.")
        revoke = verbs.add_parser("revoke", help="Revoke USER's active tokens (all, or --name's).")
        revoke.add_argument("user")
        revoke.add_argument("--name", default=None, help="Only tokens with this name.")
        listing = verbs.add_parser("list", help="List USER's tokens (prefix, name, state).")
        listing.add_argument("user")

    def handle(self, *args, verb, user, **options):
        try:
            owner = user_by_username(user)
            if verb == "create":
                rate_limit = options["rate_limit"]
                if rate_limit is not None and rate_limit < 1:
                    raise BadInput("--rate-limit must be at least 1")
                _, raw = api_token_create(user=owner, name=options["name"], rate_limit_per_minute=rate_limit)
                self.stdout.write(raw)
            elif verb == "revoke":
                revoked = api_tokens_revoke(user=owner, name=options["name"])
                self.stdout.write(f"revoked {revoked} token(s) of {owner.username}")
            else:
                for token in ApiToken.objects.filter(user=owner):
                    state = "active" if token.active else f"revoked {token.revoked_at:%Y-%m-%d %H:%M}"
                    self.stdout.write(f"{token.prefix}…  {token.name:<20} {state}")
        except ShepherdError as error:
            raise BadInput(str(error)) from None
