"""Datasets and models: the digits split, user files, reference models trained and cached."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

from toolkit.data import Dataset, load_dataset
from toolkit.errors import ConfigError, ModelFileError
from toolkit.models import load_model
from toolkit.models.reference import MIN_TEST_ACCURACY_PCT, reference_card
from toolkit.models.train import accuracy, train_epochs
from toolkit.paths import edgeloop_home


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Training in this module uses one torch thread (2 cores are shared with the agents)."""


def test_digits_is_scaled_split_80_20_and_the_same_every_time():
    first, second = load_dataset("digits"), load_dataset("digits")
    total = len(first.train_x) + len(first.test_x)
    assert total == 1797 and len(first.test_x) == round(0.2 * total)
    assert first.input_shape == (1, 8, 8) and first.num_classes == 10
    assert 0.0 <= float(first.train_x.min()) and float(first.train_x.max()) <= 1.0
    assert torch.equal(first.test_x, second.test_x) and torch.equal(first.test_y, second.test_y)
    assert len(first.calibration(32)) == 32
    batch_x, batch_y = next(iter(first.train_loader(batch_size=16)))
    assert batch_x.shape == (16, 1, 8, 8) and batch_y.dtype == torch.int64


def test_npz_dataset_loads_x_and_y(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x=np.random.rand(50, 3, 4).astype(np.float32), y=np.arange(50) % 5)
    data = load_dataset(str(path))
    assert data.input_shape == (3, 4) and data.num_classes == 5
    assert len(data.train_x) + len(data.test_x) == 50


def test_npz_without_y_names_the_file_and_the_missing_key(tmp_path):
    path = tmp_path / "broken.npz"
    np.savez(path, x=np.zeros((4, 2), np.float32), labels=np.zeros(4))
    with pytest.raises(ConfigError, match=r"broken\.npz.*'y'"):
        load_dataset(str(path))


def test_function_returning_a_dataloader_becomes_a_dataset(tmp_path):
    source = tmp_path / "mydata.py"
    source.write_text(textwrap.dedent("""
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        def loader():
            x = torch.rand(40, 6)
            y = torch.arange(40) % 3
            return DataLoader(TensorDataset(x, y), batch_size=7)
    """))
    data = load_dataset(f"{source}:loader")
    assert isinstance(data, Dataset) and data.input_shape == (6,) and data.num_classes == 3
    assert len(data.train_x) == 32 and len(data.test_x) == 8


def test_unknown_dataset_spec_says_what_is_expected():
    with pytest.raises(ConfigError, match="digits"):
        load_dataset("imagenet")


@pytest.mark.parametrize("name", ["digits-cnn", "digits-mlp"])
def test_reference_model_reaches_stated_accuracy_and_is_cached(name):
    loaded = load_model(name)
    data = load_dataset("digits")
    measured = accuracy(loaded.module, data.test_loader())
    assert measured >= MIN_TEST_ACCURACY_PCT
    assert loaded.input_shape == (1, 1, 8, 8)
    cached = list((edgeloop_home() / "reference_models").glob(f"{name}-*.pt"))
    assert len(cached) == 1
    assert reference_card(name)["test_accuracy_pct"] == pytest.approx(measured)
    again = load_model(name).module  # loaded from the cache: identical weights
    for a, b in zip(loaded.module.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_user_file_function_with_input_shape_attribute(tmp_path):
    source = tmp_path / "net.py"
    source.write_text(textwrap.dedent("""
        from torch import nn

        def build():
            model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
            model.input_shape = (1, 3, 4)
            return model
    """))
    loaded = load_model(f"{source}:build")
    assert loaded.input_shape == (1, 3, 4)
    assert load_model(f"{source}:build", input_shape=(2, 3, 4)).input_shape == (2, 3, 4)


def test_user_model_without_any_input_shape_is_refused_with_the_fix(tmp_path):
    source = tmp_path / "plain.py"
    source.write_text("from torch import nn\n\ndef build():\n    return nn.Linear(3, 2)\n")
    with pytest.raises(ModelFileError, match="--input-shape"):
        load_model(f"{source}:build")


def test_exported_pt2_loads_with_its_input_shape(tmp_path):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 2)).eval()
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(1, 2, 3),)), str(path))
    loaded = load_model(str(path))
    assert loaded.input_shape == (1, 2, 3)
    x = torch.rand(1, 2, 3)
    assert torch.allclose(loaded.module(x), model(x))


def test_unknown_model_name_lists_what_is_accepted():
    with pytest.raises(ModelFileError, match="digits-cnn"):
        load_model("resnet-9000")


def test_train_epochs_lowers_the_loss_and_l1_term_is_added():
    data = load_dataset("digits")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    losses = train_epochs(model, data.train_loader(batch_size=64), epochs=3, lr=1e-2, seed=0)
    assert len(losses) == 3 and losses[-1] < losses[0]
    calls = []

    def l1(m):
        calls.append(1)
        return 1e-4 * sum(p.abs().sum() for p in m.parameters())

    train_epochs(model, data.train_loader(batch_size=256), epochs=1, extra_loss=l1)
    assert len(calls) == len(data.train_loader(batch_size=256))
