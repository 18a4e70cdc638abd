import logging
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import DatabaseError, connection

from supervision.services import supervisor_run_once, supervisor_tick


class Command(BaseCommand):
    help = "Run the supervisor: one tick (--once) or every SUPERVISOR_INTERVAL_SECONDS (--loop)."

    def add_arguments(self, parser):
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument("--once", action="store_true", help="One tick, waiting for the leader lease if held.")
        group.add_argument("--loop", action="store_true", help="Tick forever (as beat would).")

    def handle(self, *args, once=False, loop=False, **options):
        if once:
            run = supervisor_run_once()
            if run is None:
                self.stdout.write("another supervisor kept the lease; nothing done")
            else:
                self.stdout.write(
                    f"run {run.pk}: {run.findings} findings, {run.actions} actions, "
                    f"{run.released} released{' (errored)' if run.error else ''}"
                )
            return
        interval = settings.SUPERVISOR_INTERVAL_SECONDS
        self.stdout.write(f"supervising every {interval:g}s")
        while True:
            started = time.monotonic()
            try:
                supervisor_tick()
            except DatabaseError:
                # The database restarted or failed over: the loop must outlive it, not
                # end the only supervisor. Drop the dead connection; the next tick reconnects.
                logging.getLogger("shepherd.supervisor").warning("tick failed; next interval", exc_info=True)
                connection.close()
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
