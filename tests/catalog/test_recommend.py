"""`kennel recommend`: quality proxy and ranking on what-if machines (no probing, no network)."""

from __future__ import annotations

import pytest

from kennel.catalog.quality import quality_b, quant_loss_pct
from kennel.catalog.recommend import recommend, upgraded
from kennel.errors import InvalidOptionError
from kennel.hardware.whatif import what_if

GiB = 2**30


def test_bigger_model_at_lower_quant_can_win() -> None:
    assert quality_b(70.6, None, "Q3_K_M") > quality_b(32.8, None, "Q8_0")
    assert quality_b(8.0, None, "Q2_K") < quality_b(1.0, None, "F16")
    assert quality_b(8.0, None, "Q4_K_M") < quality_b(8.0, None, "Q5_K_M") < quality_b(8.0, None, "Q8_0")
    # larger models lose less to the same quantization
    assert quant_loss_pct("Q4_K_M", 70) < quant_loss_pct("Q4_K_M", 8) < quant_loss_pct("Q4_K_M", 1)
    # MoE counts between its active and total size
    assert 9 < quality_b(30.5, 3.3, "Q8_0") < 30.5


def test_single_4090_ranks_32b_at_4bit_first() -> None:
    hw = what_if(gpu="RTX 4090", ram=64 * GiB)
    r = recommend(hw, top=5)
    assert r.considered >= 40 and len(r.picks) == 5
    top = r.picks[0]
    assert top.readable and top.option.fits == "gpu" and top.option.memory.total < 24 * GiB
    assert 24 <= top.entry.params_b <= 36 and top.quant in ("Q4_K_M", "IQ4_XS", "Q5_K_M")
    quality = [p.quality_b for p in r.picks]
    assert quality[0] >= max(quality) * 0.93  # ranked by quality (within one ~7% bucket)
    assert not any(p.entry.embedding_only for p in r.picks)
    assert all(p.reason and "dense" in p.reason for p in r.picks)
    # one more 4090 unlocks a 70B-class model
    assert r.upgrade is not None and len(r.upgrade.gpus) == 2
    assert r.upgrade_picks and r.upgrade_picks[0].quality_b > top.quality_b * 1.05


def test_cpu_only_machine_prefers_readable_speed_and_suggests_a_gpu() -> None:
    hw = what_if(ram=16 * GiB, cpu_cores=8, ram_bandwidth_gbs=50)
    r = recommend(hw, top=3)
    assert r.picks[0].readable and r.picks[0].option.fits == "cpu"
    assert r.picks[0].option.decode_tok_s.expected >= 10
    assert r.upgrade is not None and r.upgrade.gpus and r.upgrade.gpus[0].name == "RTX 4090"
    mac = upgraded(what_if(gpu="M3 Max", ram=64 * GiB))
    assert mac.memory.total == 128 * GiB and mac.gpus[0].total_memory == 128 * GiB


def test_filters_language_licence_task() -> None:
    hw = what_if(gpu="RTX 4090", ram=64 * GiB)
    vi = recommend(hw, lang="vi", commercial=True, top=20, with_upgrade=False)
    assert vi.picks and all("vi" in p.entry.languages and p.license.commercial != "no" for p in vi.picks)
    assert vi.upgrade is None and vi.upgrade_picks == ()
    emb = recommend(hw, task="embedding", with_upgrade=False)
    assert emb.picks and all(p.entry.embedding_only for p in emb.picks)
    code = recommend(hw, task="coding", top=3, with_upgrade=False)
    assert all("coding" in p.entry.tasks for p in code.picks)


def test_tiny_machine_and_bad_filters() -> None:
    small = recommend(what_if(ram=2 * GiB, cpu_cores=2, ram_bandwidth_gbs=10), top=50, with_upgrade=False)
    assert small.picks and all(p.option.memory.total < 2 * GiB for p in small.picks)
    with pytest.raises(InvalidOptionError):
        recommend(what_if(ram=8 * GiB), task="embedding", lang="uk")
    with pytest.raises(InvalidOptionError):
        recommend(what_if(ram=8 * GiB), top=0)
