import json

from django.core.management.base import BaseCommand

from agents.models import Agent, AgentStatus
from agents.selectors import agents_overview
from agents.services import agent_drain, agent_resume
from project.commands import BadInput


class Command(BaseCommand):
    help = "List agents; `drain NAME_OR_ID` stops one taking work (it finishes what it runs); `resume` undoes it."

    def add_arguments(self, parser):
        parser.add_argument("verb", nargs="?", choices=["list", "drain", "resume"], default="list")
        parser.add_argument("agent", nargs="?", help="Agent name (e.g. default@host) or id.")
        parser.add_argument("--json", action="store_true", help="Machine-readable list.")

    def handle(self, *args, verb, agent, json: bool = False, **options):
        if verb == "list":
            rows = agents_overview()
            if json:
                self.stdout.write(_dumps(rows, default=str, indent=2))
            for row in [] if json else rows:
                self.stdout.write(
                    f"{row['id']:>5} {row['name']:<30} {row['status']:<9} "
                    f"heartbeat {row['heartbeat_age_seconds']:>6.1f}s ago  queues {','.join(row['queues'])}"
                )
            return
        if not agent:
            raise BadInput(f"{verb} needs an agent name or id")
        live = Agent.objects.filter(status__in=[AgentStatus.ONLINE, AgentStatus.DRAINING])
        found = live.filter(pk=int(agent)) if agent.isdigit() else live.filter(name=agent)
        target = found.order_by("-id").first()
        if target is None:
            raise BadInput(f"no live agent {agent!r} (see `manage.py agents`)")
        service = agent_drain if verb == "drain" else agent_resume
        if service(agent_id=target.pk):
            self.stdout.write(f"{verb}: {target.name} (id {target.pk}) done")
        else:
            self.stdout.write(f"{verb}: {target.name} (id {target.pk}) already handled ({target.status})")


_dumps = json.dumps
