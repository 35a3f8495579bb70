"""The served weights' dtype: half precision on a GPU by default, float32 on CPU, what is asked otherwise."""

import torch

from tandem.serve.app import ServeConfig, serving_dtype


def test_auto_is_the_default_and_keeps_float32_on_cpu():
    assert ServeConfig(model="m").dtype == "auto"
    assert serving_dtype("auto", "cpu") is torch.float32
    assert serving_dtype("bfloat16", "cpu") is torch.bfloat16


def test_auto_on_cuda_is_bf16_where_supported_else_fp16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kw: True)
    assert serving_dtype("auto", "cuda:1") is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kw: False)
    assert serving_dtype("auto", "cuda") is torch.float16
    assert serving_dtype("float32", "cuda") is torch.float32
