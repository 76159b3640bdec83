"""cmrkit.metrics.features: the offline extractor (deterministic, per-slice samples), local weights
handling of the FID/FRD extractors."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from cmrkit.metrics import features as feat

HAS_TV = importlib.util.find_spec("torchvision") is not None


def test_offline_extractor_is_deterministic_and_sensitive(make_discs):
    rng = np.random.default_rng(5)
    real = make_discs(rng, 24)
    ext = feat.get_extractor("offline", device="cpu")
    assert ext.name == "RandomConv-v1(seed=0)" and ext.feature_dim == 992
    f1 = ext(real, batch_size=10)
    assert f1.shape == (24, 992) and f1.dtype == np.float64
    np.testing.assert_array_equal(f1, feat.RandomConvFeatures(0, device="cpu")(real))  # rebuilt: identical
    assert not np.allclose(f1, feat.RandomConvFeatures(1, device="cpu")(real))
    # 3D volumes: every XY slice is one sample
    vol = np.stack([real[:4, 0]] * 3, axis=1)[:, None]  # (4, 1, 3, H, W)
    assert ext(vol).shape == (12, 992)
    with pytest.raises(ValueError, match="channel"):
        ext(np.concatenate([real, real], axis=1))


def test_pretrained_extractors_need_local_weights(monkeypatch, tmp_path):
    monkeypatch.delenv(feat.FID_WEIGHTS_ENV, raising=False)
    monkeypatch.delenv(feat.FRD_WEIGHTS_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match="CMRKIT_FID_WEIGHTS"):
        feat.get_extractor("fid")
    with pytest.raises(FileNotFoundError, match="CMRKIT_FRD_WEIGHTS"):
        feat.ResNet50Features()
    monkeypatch.setenv(feat.FRD_WEIGHTS_ENV, str(tmp_path / "missing.pth"))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        feat.ResNet50Features()
    with pytest.warns(UserWarning, match="offline extractor RandomConv"):
        ext = feat.get_extractor("frd", fallback=True)
    assert ext.name.startswith("RandomConv")
    if not HAS_TV:
        (tmp_path / "w.pth").write_bytes(b"not used")
        with pytest.raises(ImportError, match="torchvision"):
            feat.InceptionV3Features(tmp_path / "w.pth")


@pytest.mark.skipif(not HAS_TV, reason="torchvision is not installed")
def test_pretrained_extractors_load_state_dicts(tmp_path):  # pragma: no cover - needs torchvision
    import torchvision

    net = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)
    torch.save(net.state_dict(), tmp_path / "fid.pth")
    ext = feat.InceptionV3Features(tmp_path / "fid.pth", device="cpu")
    assert ext.name.startswith("InceptionV3-FID") and ext(np.random.rand(2, 1, 64, 64)).shape == (2, 2048)
    rn = torchvision.models.resnet50(weights=None)
    torch.save(rn.state_dict(), tmp_path / "rn.pth")
    ext = feat.ResNet50Features(tmp_path / "rn.pth", device="cpu")
    assert ext.name == "ResNet50(torchvision-ImageNet)" and ext(np.random.rand(2, 1, 64, 64)).shape == (2, 2048)
