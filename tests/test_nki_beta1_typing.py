"""Tests of trnlab.nki_beta1.typing."""
import trnlab.nki_beta1.language as nl
import trnlab.nki_beta1.typing as nt


def test_typed_placeholder_is_only_a_shape_and_dtype():
    assert nt.tensor[[4, 8], nl.float32].is_placeholder()
    assert not nt.tensor[4, 8].is_placeholder()           # an annotation, not an input
