from scheduling.management.commands.pause import Command as PauseCommand


class Command(PauseCommand):
    help = "Resume a paused queue or work type; what waited is released at once."
    paused = False
