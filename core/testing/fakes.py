"""Every provider fake on loopback at once: GHL, EmailBison, Calendly and the OpenAI Responses API.

From tests and benches::

    with fake_stack() as stack:
        stack.ghl, stack.emailbison, stack.calendly, stack.openai   # the fakes themselves
        stack.env()        # {"GHL_API_BASE_URL": ..., "OPENAI_BASE_URL": ..., ...} for app processes

As a process (the demo in ``make dev`` runs it from a generated Procfile)::

    python -m core.testing.fakes [--state-file var/demo/fakes.json] [--ports 0,0,0,0] [--demo]
        [--replay-to http://127.0.0.1:8000]

``--plan FILE`` only picks free ports, a webhook secret and a GHL webhook signing key and
writes them to FILE (so the app can be configured before the fakes run); ``--serve FILE``
starts the fakes on the planned ports. ``--env FILE`` prints ``export`` lines for a shell.
With ``--demo`` the fakes hold the demo location's data (``core/testing/demo.py``) and, with
``--replay-to``, replay the demo's inbound script over the app's real webhooks once it answers.

This module imports no app code: the fakes speak HTTP only (``core`` sits below every app).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core.testing.fake_calendly import FakeCalendly, fake_calendly_server
from core.testing.fake_ghl import FakeGhl, fake_ghl_server
from core.testing.fake_openai import FakeOpenAI, fake_openai_server
from core.testing.fake_outbox import FakeOutbox, fake_outbox_server
from core.testing.processes import free_port

NAMES = ("ghl", "emailbison", "calendly", "openai")


@dataclass
class FakeStack:
    ghl: FakeGhl
    emailbison: FakeOutbox
    calendly: FakeCalendly
    openai: FakeOpenAI

    def env(self) -> dict[str, str]:
        """Settings that point an app process at the fakes (the EmailBison URL is per workspace)."""
        # Workspace URLs (booking pages, EmailBison) on loopback must pass the outbound guard.
        return {**app_settings(self.describe()), "LEADLINE_OUTBOUND_ALLOWLIST": "127.0.0.1"}

    def describe(self) -> dict[str, str]:
        return {
            "ghl": self.ghl.base_url,
            "ghl_backend": self.ghl.backend_base_url,
            "emailbison": self.emailbison.emailbison_base_url,
            "calendly": self.calendly.base_url,
            "openai": self.openai.base_url,
        }


@contextlib.contextmanager
def fake_stack(
    *,
    ports: dict[str, int] | None = None,
    ghl: dict | None = None,
    emailbison: dict | None = None,
    calendly: dict | None = None,
    openai: dict | None = None,
) -> Iterator[FakeStack]:
    """Start the four fakes (keyword dicts go to each one's server function)."""
    ports = ports or {}
    with (
        fake_ghl_server(port=ports.get("ghl", 0), **(ghl or {})) as fake_ghl,
        fake_outbox_server(port=ports.get("emailbison", 0), **(emailbison or {})) as fake_eb,
        fake_calendly_server(port=ports.get("calendly", 0), **(calendly or {})) as fake_cal,
        fake_openai_server(port=ports.get("openai", 0), **(openai or {})) as fake_ai,
    ):
        yield FakeStack(ghl=fake_ghl, emailbison=fake_eb, calendly=fake_cal, openai=fake_ai)


# --- plan / serve / env for the run command ---------------------------------------------


def plan_write(path: Path) -> dict:
    """Free ports, a webhook secret and an Ed25519 GHL signing key, written to ``path`` (0600)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    raw_private = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    raw_public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ports = {name: free_port() for name in NAMES}
    base = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    plan = {
        "ports": ports,
        "urls": {
            "ghl": base["ghl"],
            "ghl_backend": f"{base['ghl']}/backend",
            "emailbison": f"{base['emailbison']}/emailbison",
            "calendly": base["calendly"],
            "openai": f"{base['openai']}/v1",
        },
        "webhook_secret": secrets.token_urlsafe(24),
        "ghl_signing_key": base64.b64encode(raw_private).decode(),
        "ghl_public_key": base64.b64encode(raw_public).decode(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(plan, out, indent=2)
    return plan


def app_settings(urls: dict[str, str]) -> dict[str, str]:
    """The app's settings for the fakes at ``urls`` (``FakeStack.describe()`` / a plan's ``urls``)."""
    return {
        "GHL_API_BASE_URL": urls["ghl"],
        "GHL_BACKEND_BASE_URL": urls["ghl_backend"],
        "CALENDLY_API_BASE_URL": urls["calendly"],
        "OPENAI_BASE_URL": urls["openai"],
        "OPENAI_API_KEY": "sk-fake-not-a-real-key",
    }


def plan_env(plan: dict) -> dict[str, str]:
    return {**app_settings(plan["urls"]), "GHL_WEBHOOK_ED25519_PUBLIC_KEY": plan["ghl_public_key"]}


def _serve(plan: dict, *, demo: bool, replay_to: str, latency_s: float) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with fake_stack(ports=plan["ports"], openai={"latency_s": latency_s}) as stack:
        if demo:
            from core.testing import demo as demo_script

            demo_script.seed_fakes(stack)
        for name, url in stack.describe().items():
            print(f"fake {name:<11} {url}", flush=True)
        for name, url in (("ghl", stack.ghl.base_url), ("emailbison", stack.emailbison.emailbison_base_url)):
            print(f"fake {name} received sends: {url.removesuffix('/emailbison')}/_fake/sends", flush=True)
        if demo and replay_to:
            threading.Thread(
                target=demo_script.replay, kwargs={"base_url": replay_to, "plan": plan}, daemon=True
            ).start()
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--plan", metavar="FILE", help="pick ports and keys, write them to FILE, exit")
    action.add_argument("--serve", metavar="FILE", help="serve on the ports FILE planned")
    action.add_argument("--env", metavar="FILE", help="print shell export lines for the app processes")
    parser.add_argument("--state-file", help="without --serve: write the fakes' URLs here (JSON)")
    parser.add_argument("--demo", action="store_true", help="hold the demo location's data")
    parser.add_argument("--replay-to", default="", help="app base URL: replay the demo's inbound script there")
    parser.add_argument("--openai-latency", type=float, default=0.3, help="seconds per fake OpenAI answer")
    args = parser.parse_args(argv)
    if args.plan:
        plan_write(Path(args.plan))
        return
    if args.env:
        plan = json.loads(Path(args.env).read_text())
        for key, value in plan_env(plan).items():
            print(f"export {key}='{value}'")
        return
    if args.serve:
        plan = json.loads(Path(args.serve).read_text())
    else:
        plan = plan_write(Path(args.state_file)) if args.state_file else {"ports": {}}
    if args.demo and args.replay_to and "webhook_secret" not in plan:
        sys.exit("--replay-to needs a planned webhook secret (--serve FILE or --state-file FILE)")
    _serve(plan, demo=args.demo, replay_to=args.replay_to, latency_s=args.openai_latency)


if __name__ == "__main__":
    main()
