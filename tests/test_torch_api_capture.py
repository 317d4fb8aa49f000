"""The model line of each op (trnlab.torch.capture.source_line): the innermost frame outside the
installed torch and transformers packages, decided by location, not by names in the path."""
import os
import types

import pytest

torch = pytest.importorskip("torch")

import trnlab.torch as tt  # noqa: E402
from trnlab.torch.capture import source_line  # noqa: E402


def node_with_trace(frames):
    text = "".join(f'  File "{path}", line {line}, in {fn}\n    {code}\n' for path, line, fn, code in frames)
    return types.SimpleNamespace(meta={"stack_trace": text})


TORCH_LINEAR = os.path.join(os.path.dirname(torch.__file__), "nn", "modules", "linear.py")


def test_transformers_frame_is_not_the_model_line():
    transformers = pytest.importorskip("transformers")
    hf_file = os.path.join(os.path.dirname(transformers.__file__), "models", "llama", "modeling_llama.py")
    node = node_with_trace([("/home/me/trnlab/serve.py", 12, "forward", "return self.model(ids)"),
                            (hf_file, 300, "forward", "q = self.q_proj(x)"),
                            (TORCH_LINEAR, 134, "forward", "return F.linear(input, self.weight, self.bias)")])
    assert source_line(node) == "/home/me/trnlab/serve.py:12  return self.model(ids)"


def test_innermost_user_frame_wins():
    node = node_with_trace([("/home/me/model.py", 40, "forward", "x = self.block(x)"),
                            ("/home/me/model.py", 21, "forward", "return self.proj(x)"),
                            (TORCH_LINEAR, 134, "forward", "return F.linear(input, self.weight, self.bias)")])
    assert source_line(node) == "/home/me/model.py:21  return self.proj(x)"


def test_transformers_model_called_directly_points_into_its_modeling_file():
    transformers = pytest.importorskip("transformers")
    hf_file = os.path.join(os.path.dirname(transformers.__file__), "models", "gpt2", "modeling_gpt2.py")
    node = node_with_trace([(hf_file, 190, "forward", "query = self.c_attn(hidden_states)"),
                            (TORCH_LINEAR, 134, "forward", "return F.linear(input, self.weight, self.bias)")])
    assert source_line(node) == f"{hf_file}:190  query = self.c_attn(hidden_states)"


def test_only_library_frames_fall_back_to_the_innermost():
    node = node_with_trace([(TORCH_LINEAR, 134, "forward", "return F.linear(input, self.weight, self.bias)")])
    assert source_line(node).startswith(TORCH_LINEAR + ":134")


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(16, 16)

    def forward(self, x):
        return self.proj(x).relu()


def test_report_model_line_points_at_this_file():
    fn, rep = tt.compile(Block(), (torch.randn(4, 16),), dtype=torch.float32)
    sources = {o.source.split("  ")[0] for o in rep.ops}
    assert sources and all(s.startswith(__file__ + ":") for s in sources), sources
