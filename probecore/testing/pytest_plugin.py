"""pytest fixtures for plugin authors; registered through the ``pytest11`` entry point."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from . import HookRecorder, make_host, write_profile


@pytest.fixture
def hook_recorder() -> HookRecorder:
    """A fresh :class:`HookRecorder`; pass it to ``probecore_host(hook_recorder)``."""
    return HookRecorder()


@pytest.fixture
def probecore_host() -> Callable[..., object]:
    """A factory: ``probecore_host(*plugins)`` builds a plugin manager with the built-ins and them."""
    return make_host


@pytest.fixture
def profile_file(tmp_path: Path) -> Callable[[str], Path]:
    """A factory: ``profile_file(toml_text)`` writes a profile in a temp dir and returns its path."""
    def make(text: str, name: str = "profile.toml") -> Path:
        return write_profile(tmp_path, text, name)
    return make
