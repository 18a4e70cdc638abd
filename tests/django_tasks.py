"""@task functions the tests enqueue through django.tasks; worker subprocesses import them."""

from django.tasks import task


@task
def add(a: int, b: int) -> int:
    return a + b


@task(priority=50, queue_name="cpu")
def shout(word: str, *, times: int = 2) -> dict:
    return {"word": word.upper() * times}


class Refused(Exception):
    pass


@task
def refuse(reason: str) -> None:
    raise Refused(reason)


@task(takes_context=True)
def whoami(context, label: str) -> dict:
    return {"label": label, "attempt": context.attempt, "result_id": context.task_result.id}


def not_a_task() -> str:
    return "plain function"
