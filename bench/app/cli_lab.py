"""``bench twin-host`` (QEMU twins behind a labgrid exporter: a simulated lab host) and ``bench rack release`` (the
janitor for the places of a killed job)."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import click
from rich.console import Console

console = Console(stderr=True)


@click.command("twin-host")
@click.option("--name", required=True, help="this host's exporter name (places are named <name>-<board>-<i>)")
@click.option("--coordinator", required=True, help="labgrid coordinator HOST:PORT")
@click.option("--board", "boards", multiple=True, required=True,
              help="host a twin of this board (repeatable; give a board twice for two twins)")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="where uploaded images, QEMU logs and exporter.yaml go (default: a temporary directory)")
@click.option("--yaml-only", is_flag=True, help="write the exporter YAML, print it and exit (serve nothing)")
def twin_host_cmd(name: str, coordinator: str, boards: tuple[str, ...], work: Path | None, yaml_only: bool) -> None:
    """Serve QEMU twins on 127.0.0.1 behind a labgrid exporter NAME, with a place for each, until SIGTERM/Ctrl-C.

    Each twin's UART is a NetworkSerialPort (raw TCP) and its BenchTwinControl endpoint loads and resets it, so a
    `bench run --rack labgrid://COORDINATOR` uses it as it would a board on a lab host."""
    from bench.app.lab_local import stop as stop_process
    from bench.config.boards import boards_named, load_catalogue
    from bench.target.drivers import die_with_parent
    from bench.target.lab import LabClient, labgrid_client, wait_for
    from bench.target.twinhost import TwinHost

    chosen = boards_named(load_catalogue(), list(boards))
    work = work or Path(tempfile.mkdtemp(prefix=f"twin-host-{name}-"))
    host = TwinHost(name, chosen, work)
    host.start()
    yaml = work / "exporter.yaml"
    yaml.write_text(host.exporter_yaml())
    if yaml_only:
        click.echo(yaml.read_text())
        host.close()
        return
    exporter_cmd = [str(Path(labgrid_client()).with_name("labgrid-exporter")), "-c", coordinator, "--name", name,
                    str(yaml)]
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log = (work / "exporter.log").open("ab")
    exporter = subprocess.Popen(die_with_parent(exporter_cmd), stdout=log, stderr=subprocess.STDOUT)
    try:
        client = LabClient(coordinator, f"twin-host-{name}")
        groups = {f"{name}/{t.place}/" for t in host.twins}
        wait_for(lambda: groups <= {line.rsplit("/", 1)[0] + "/" for line in client.run("resources").split()},
                 30, f"exporter {name}'s resources on {coordinator}")
        for t in host.twins:
            client.create_place(t.place, f"{name}/{t.place}/*", {"board": t.board.name, "kind": "emulated",
                                                                  "host": name})
        console.print(f"twin host {name} ready on {coordinator}: " + ", ".join(t.place for t in host.twins)
                      + f" (work {work})", soft_wrap=True)
        print(f"ready {' '.join(t.place for t in host.twins)}", flush=True)
        while not stop.wait(0.5):
            if exporter.poll() is not None:  # exit 100: the coordinator went away; come back when it does
                console.print(f"exporter exited ({exporter.returncode}); restarting it")
                stop.wait(1.0)
                exporter = subprocess.Popen(die_with_parent(exporter_cmd), stdout=log, stderr=subprocess.STDOUT)
    finally:
        stop_process(exporter, timeout=10)
        host.close()
        log.close()
        sys.stdout.flush()


@click.command("release")
@click.option("--coordinator", required=True, help="labgrid coordinator HOST:PORT")
@click.option("--owner", required=True, help="HOST/USER whose places to release (the bench prints it when it starts)")
def release_cmd(coordinator: str, owner: str) -> None:
    """Janitor: release every labgrid place OWNER holds (a job killed with SIGKILL cannot release its own)."""
    from bench.app.lab import release_owner
    from bench.target.lab import LabError

    if "/" not in owner:
        raise click.BadParameter("give HOST/USER, as labgrid names holders", param_hint="--owner")
    try:
        released = release_owner(coordinator, owner)
    except LabError as exc:
        raise click.ClickException(str(exc)) from None
    console.print(f"released {len(released)} place(s) held by {owner}: {', '.join(released) or 'none held'}")
