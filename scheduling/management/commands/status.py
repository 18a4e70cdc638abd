import json

from django.core.management.base import BaseCommand

from project.platform import platform_status


class Command(BaseCommand):
    help = "Counts per state, depth per queue, agents with heartbeat age, and the last supervisor run."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Machine-readable output.")

    def handle(self, *args, json: bool = False, **options):
        status = platform_status()
        if json:
            self.stdout.write(_dumps(status, default=str, indent=2))
            return
        out = self.stdout
        counts = status["counts"]
        out.write("Work items: " + "  ".join(f"{state} {n}" for state, n in counts.items()))
        out.write("\nQueues (pending / queued / running / retry_wait):")
        for queue, depth in status["queues"].items():
            out.write(
                f"  {queue:<10} {depth['pending']:>7} {depth['queued']:>7} {depth['running']:>7}"
                f" {depth['retry_wait']:>7}"
            )
        out.write("\nWhy pending items wait (blocked_reason):")
        if not any(status["waiting"].values()):
            out.write("  nothing pending")
        for queue, reasons in sorted(status["waiting"].items()):
            out.write(f"  {queue:<10} " + "  ".join(f"{reason} {n}" for reason, n in sorted(reasons.items())))
        out.write("\nAgents:")
        if not status["agents"]:
            out.write("  none registered")
        for agent in status["agents"]:
            out.write(
                f"  {agent['name']:<30} {agent['status']:<9} pid {agent['pid']:<7} "
                f"heartbeat {agent['heartbeat_age_seconds']:>6.1f}s ago  queues {','.join(agent['queues'])}"
            )
        run = status["supervisor"]
        out.write("")
        if run is None:
            out.write(self.style.WARNING("Supervisor: no run yet"))
        else:
            line = (
                f"Supervisor: last run {run['age_seconds']}s ago, {run['findings']} findings, "
                f"{run['actions']} actions{' (errored)' if run['error'] else ''}"
            )
            out.write(self.style.WARNING(line + " - SILENT for over three intervals") if run["silent"] else line)


_dumps = json.dumps
