"""A model is a folder: `path/to/model.py:function` imports its sibling modules, nothing leaks
between two users' folders, and the folder travels with a Ray job."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from toolkit.errors import SetupError
from toolkit.models import load_model

BLOCKS = """import torch

WIDTH = {width}


class Block(torch.nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = torch.nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x))
"""

MODEL = """import torch
from blocks import WIDTH, Block
from layers.head import Head


class Net(torch.nn.Module):
    input_shape = (1, 1, 8, 8)

    def __init__(self):
        super().__init__()
        self.body = Block(1, WIDTH)
        self.head = Head(WIDTH * 64, 10)

    def forward(self, x):
        return self.head(self.body(x))


def build():
    torch.manual_seed(0)
    return Net()


def build_lazily():
    from blocks import WIDTH as lazy_width  # imported when the function runs
    assert lazy_width == WIDTH
    return build()
"""

HEAD = """import torch


class Head(torch.nn.Module):
    def __init__(self, features, classes):
        super().__init__()
        self.fc = torch.nn.Linear(features, classes)

    def forward(self, x):
        return self.fc(x.flatten(1))
"""


def model_folder(root: Path, width: int) -> Path:
    """A folder: model.py, its sibling blocks.py and a sub-package layers/ (head.py)."""
    root.mkdir(parents=True)
    (root / "blocks.py").write_text(BLOCKS.format(width=width))
    (root / "model.py").write_text(MODEL)
    (root / "layers").mkdir()
    (root / "layers" / "__init__.py").write_text("")
    (root / "layers" / "head.py").write_text(HEAD)
    return root / "model.py"


def test_a_model_file_imports_its_siblings_and_a_sub_package(tmp_path):
    path = model_folder(tmp_path / "net", 4)
    path_before = list(sys.path)
    loaded = load_model(f"{path}:build")
    assert loaded.input_shape == (1, 1, 8, 8)
    assert loaded.module(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert loaded.module.body.conv.out_channels == 4
    assert sys.path == path_before  # the folder is importable for the load only
    assert not {"blocks", "layers", "layers.head", "model"} & set(sys.modules)


def test_two_folders_with_same_named_siblings_do_not_see_each_other(tmp_path):
    first = load_model(f"{model_folder(tmp_path / 'a', 4)}:build").module
    second = load_model(f"{model_folder(tmp_path / 'b', 6)}:build").module
    assert first.body.conv.out_channels == 4 and second.body.conv.out_channels == 6
    assert type(first.body).__module__ != type(second.body).__module__
    again = load_model(f"{tmp_path / 'a' / 'model.py'}:build").module  # a again: still a's
    assert again.body.conv.out_channels == 4


def test_a_sibling_imported_inside_the_function_resolves_too(tmp_path):
    path = model_folder(tmp_path / "lazy", 3)
    assert load_model(f"{path}:build_lazily").module.body.conv.out_channels == 3


def test_a_missing_sibling_is_one_line_naming_the_file(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "model.py").write_text("from bneck import Bneck\n\ndef build():\n    pass\n")
    with pytest.raises(SetupError) as caught:
        load_model(f"{folder / 'model.py'}:build")
    assert str(caught.value) == (f"model '{folder / 'model.py'}:build': importing model.py "
                                 "raised ModuleNotFoundError: No module named 'bneck' "
                                 "(model.py:1)")


def test_the_folder_travels_with_a_ray_job_and_the_model_unpickles_in_a_fresh_worker(
        tmp_path):
    """What a Ray worker does, in a real fresh process: the job's working directory is a copy
    of the folder (on PYTHONPATH, as Ray sets it); the user's modules are imported by name,
    then the model is unpickled."""
    from toolkit.tune.executors.ray_executor import job_runtime_env, user_modules

    path = model_folder(tmp_path / "job", 5)
    spec = f"{path}:build"
    module = load_model(spec).module
    env = job_runtime_env(spec)
    assert Path(env["working_dir"]) == path.parent
    modules = user_modules(module)
    assert {file for _, file in modules} == {"model.py", "blocks.py", "layers/head.py"}

    worker_dir = tmp_path / "worker"
    shutil.copytree(env["working_dir"], worker_dir)
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(module))
    torch.save(torch.ones(1, 1, 8, 8), tmp_path / "x.pt")
    script = (
        "import pickle, sys, torch\n"
        "from toolkit.tune.executors.ray_executor import _import_user_modules\n"
        f"_import_user_modules({modules!r})\n"
        f"model = pickle.loads(open({str(tmp_path / 'model.pkl')!r}, 'rb').read())\n"
        f"print(model(torch.load({str(tmp_path / 'x.pt')!r})).sum().item())\n")
    env_vars = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(worker_dir), str(Path(__file__).resolve().parents[1])])}
    done = subprocess.run([sys.executable, "-c", script], cwd=worker_dir, env=env_vars,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    with torch.no_grad():
        expected = module(torch.ones(1, 1, 8, 8)).sum().item()
    assert float(done.stdout.strip().splitlines()[-1]) == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
def test_a_model_folder_is_compressed_and_evaluated_on_a_real_agent(tmp_path, agent):
    from toolkit.compress.pipeline import compress
    from toolkit.data import load_dataset
    from toolkit.evaluate import evaluate_on_device
    from toolkit.quality import get_metric

    torch.set_num_threads(1)
    path = model_folder(tmp_path / "cnn", 4)
    result = compress(f"{path}:build", {"quantize": {"scheme": "int8-static"}}, "digits",
                      tmp_path / "out", export=("tflite",))
    tflite = result.artifacts["tflite"]
    assert tflite.is_file()
    data = load_dataset("digits")
    evaluation = evaluate_on_device(tflite, data, agent, metric=get_metric("top1"))
    assert evaluation.n == len(data.test_x)
    assert evaluation.metric_device == pytest.approx(evaluation.accuracy_pct)
    assert evaluation.metric_host is not None and evaluation.metric_host_basis == "host runtime"
