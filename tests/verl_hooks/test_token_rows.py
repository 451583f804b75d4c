"""TokenRows: per-row sums of per-token fields straight from TransferQueue's jagged storage.

The trainer reads every per-token field (rewards, advantages, entropy, log-probs) through it;
its sums must be the padded ``(N, T)`` sums, whichever layout a field arrives in.
"""

from __future__ import annotations

import pytest
import torch

from g2rpo_verl.verl_hooks.samples import TokenRows

LENGTHS = [3, 1, 0, 5]


def _jagged(rows):
    return torch.nested.as_nested_tensor(rows, layout=torch.jagged)


def _padded(rows, width=6):
    out = torch.zeros(len(rows), width, dtype=rows[0].dtype)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


@pytest.fixture
def fields():
    g = torch.Generator().manual_seed(0)
    values = [torch.randn(n, generator=g, dtype=torch.float32) for n in LENGTHS]
    # a mask with a hole (a tool-output token inside a multi-turn response)
    masks = [torch.ones(n, dtype=torch.long) for n in LENGTHS]
    masks[3][1] = 0
    return values, masks


def test_worked_example():
    rows = TokenRows.of(_jagged([torch.ones(2, dtype=torch.long), torch.ones(1, dtype=torch.long)]))
    field = _jagged([torch.tensor([1.0, 2.0]), torch.tensor([5.0])])
    assert rows.offsets.tolist() == [0, 2, 3] and rows.row_ids.tolist() == [0, 0, 1]
    assert rows.sum(field).tolist() == [3.0, 5.0] and rows.mean(field).tolist() == [1.5, 5.0]
    assert rows.last(field).tolist() == [2.0, 5.0] and rows.lengths.tolist() == [2, 1]
    assert rows.last_positions.tolist() == [1, 2]


@pytest.mark.parametrize("layout", ["jagged", "padded", "jagged mask, padded field"])
def test_sums_equal_the_padded_sums(fields, layout):
    values, masks = fields
    mask = _padded(masks) if layout == "padded" else _jagged(masks)
    field = _jagged(values) if layout == "jagged" else _padded(values)
    rows = TokenRows.of(mask)
    m, v = _padded(masks).double(), _padded(values).double()
    torch.testing.assert_close(rows.counts, m.sum(-1), rtol=0, atol=0)
    torch.testing.assert_close(rows.sum(field), (v * m).sum(-1), rtol=1e-15, atol=0)
    torch.testing.assert_close(rows.sum(field, masked=False), v.sum(-1), rtol=1e-15, atol=0)
    torch.testing.assert_close(rows.mean(field), (v * m).sum(-1) / m.sum(-1).clamp(min=1), rtol=1e-15, atol=0)
    assert rows.lengths.tolist() == [3, 1, 0, 4]


def test_rebuild_writes_back_in_the_masks_layout(fields):
    values, masks = fields
    rows = TokenRows.of(_jagged(masks))
    tokens = rows.values(_jagged(values)).clone()
    tokens[rows.row_ids == 3] = 0.0
    out = rows.rebuild(tokens)
    assert out.is_nested and out.offsets().tolist() == rows.offsets.tolist()
    assert out.to_padded_tensor(0).shape == (4, 5)  # padded to the longest row, not to all tokens
    assert [r.tolist() for r in out.unbind()] == [*[v.tolist() for v in values[:3]], [0.0] * 5]
    dense = TokenRows.of(_padded(masks))
    assert dense.rebuild(dense.values(_padded(values))).shape == (4, 6)


def test_a_field_whose_rows_differ_from_the_mask_is_refused(fields):
    values, masks = fields
    rows = TokenRows.of(_jagged(masks))
    with pytest.raises(ValueError, match="row lengths differ"):
        rows.sum(_jagged(values[::-1]))
    with pytest.raises(ValueError, match="shape"):
        TokenRows.of(_padded(masks)).sum(_padded(values, width=7))
