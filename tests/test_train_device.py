"""--device / --dtype resolution, with CUDA faked where the code only asks whether it is there."""

from __future__ import annotations

import pytest
import torch

from typedlm.errors import ConfigError
from typedlm.training.device import DeviceError, autocast_dtype, resolve_device


def test_auto_is_cpu_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match=r"--device cuda: no CUDA GPU is available.*--device cpu"):
        resolve_device("cuda")


def test_auto_takes_the_local_gpu_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match="only 2 GPU"):
        resolve_device("cuda", local_rank=2)


def test_unknown_names() -> None:
    with pytest.raises(ConfigError, match="device='tpu'"):
        resolve_device("tpu")
    with pytest.raises(ConfigError, match="dtype='fp16'"):
        autocast_dtype("fp16", torch.device("cpu"))


def test_cpu_stays_fp32() -> None:
    cpu = torch.device("cpu")
    assert autocast_dtype("auto", cpu) is None
    assert autocast_dtype("bf16", cpu) is None
    assert autocast_dtype("fp32", cpu) is None


def test_bf16_autocast_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert autocast_dtype("auto", gpu) is torch.bfloat16
    assert autocast_dtype("bf16", gpu) is torch.bfloat16
    assert autocast_dtype("fp32", gpu) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert autocast_dtype("auto", gpu) is None  # an old GPU trains in fp32


def test_adamw_is_fused_for_cuda_only() -> None:
    import typedlm as tl
    from typedlm.training.trainer import TrainConfig, configure_optimizer

    cfg = tl.CausalConfig(batch=2, seq_len=8, vocab=16, heads=2, head_dim=4, ffn_hidden=16, layers=1)
    model = tl.models.GPT2(cfg)
    assert configure_optimizer(model, TrainConfig(), torch.device("cuda", 0)).defaults["fused"] is True
    assert not configure_optimizer(model, TrainConfig(), torch.device("cpu")).defaults["fused"]


def test_torchrun_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from typedlm.training.distributed import DistInfo, dist_info_from_env, mean_across_ranks

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert dist_info_from_env() == DistInfo(0, 1, 0) and dist_info_from_env().is_main
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = dist_info_from_env()
    assert info == DistInfo(3, 4, 1) and not info.is_main and info.enabled
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ConfigError, match="RANK='x'"):
        dist_info_from_env()
    t = torch.tensor([1.0, 2.0])
    assert mean_across_ranks(t, DistInfo()) is t  # one process: nothing to average
