"""Shared fixtures: an isolated EDGELOOP_HOME, real model files, and real local agents."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def isolated_home(tmp_path_factory) -> Path:
    """Every test session gets its own EDGELOOP_HOME (results store, caches, reference models).

    The `edgeloop` commands tests run keep a long-lived local agent per home; here it exits
    after 60 s without work instead of the interactive default (10 min).
    """
    home = tmp_path_factory.mktemp("edgeloop-home")
    previous = os.environ.get("EDGELOOP_HOME")
    os.environ["EDGELOOP_HOME"] = str(home)
    os.environ.setdefault("EDGELOOP_AGENT_IDLE_S", "60")
    yield home
    if previous is None:
        os.environ.pop("EDGELOOP_HOME", None)
    else:
        os.environ["EDGELOOP_HOME"] = previous


@pytest.fixture(scope="session")
def model_files(tmp_path_factory):
    """fp32 and int8 .tflite, .onnx and .pt2 of one small CNN, built once per session."""
    from tests.model_files import build_all

    return build_all(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    """A real agent process on a free loopback port, with its own cache; a connected client."""
    from toolkit.transport.local import local_agent

    with local_agent(cache_dir=tmp_path_factory.mktemp("agent-cache")) as client:
        yield client


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's digits as a Dataset (ships with the package; nothing is downloaded)."""
    from toolkit.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="module")
def digits_cnn():
    """The bundled digits CNN, trained once per session into the session's EDGELOOP_HOME;
    each test module gets its own copy to change."""
    import torch

    from toolkit.models.reference import reference_model

    torch.set_num_threads(1)
    return reference_model("digits-cnn")


@pytest.fixture(scope="module")
def digits_mobilenet():
    """The bundled MobileNetV3-style digits model (1x32x32 input), trained once per session
    into the session's EDGELOOP_HOME; each test module gets its own copy to change."""
    import torch

    from toolkit.models.reference import reference_model

    torch.set_num_threads(1)
    return reference_model("digits-mobilenet")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Sets torch to one thread for a module and restores the previous count after."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
