"""fusion_selection parsing and the mode table of the spec."""
import pytest

from fusion.schedule import FusionSelection, check_mode, parse_fusion_selection, uses_snb


def test_reference_selection_parses():
    sel = parse_fusion_selection("600,1,1")
    assert (sel.v1, sel.kg, sel.ke) == (600, 1.0, 1.0)
    assert sel.slug == "600_1_1"
    assert parse_fusion_selection("850,1.5,0.5").slug == "850_1.5_0.5"


@pytest.mark.parametrize("bad", ["600,1", "a,b,c", "600,1,1,1", "", "600;1;1", "600.5,1,1"])
def test_malformed_selection_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="fusion_selection"):
        parse_fusion_selection(bad)


@pytest.mark.parametrize("bad", ["600,0,1", "600,1,0", "600,-1,1", "1001,1,1", "-1,1,1"])
def test_out_of_range_values_are_clear_errors(bad):
    with pytest.raises(ValueError, match="fusion_selection"):
        parse_fusion_selection(bad)


def test_selection_object_validates_too():
    with pytest.raises(ValueError, match="kg"):
        FusionSelection(600, 0, 1)


@pytest.mark.parametrize("mode", [3, -1, "2a", None, 1.5])
def test_unknown_mode_lists_accepted_modes(mode):
    with pytest.raises(ValueError, match=r"mode must be one of \[0, 1, 2\]"):
        check_mode(mode)


def test_mode_table_with_strict_comparison():
    v1 = 600
    # mode 0: never fuse
    assert not any(uses_snb(t, v1, 0) for t in (1, 600, 601, 991))
    # mode 1: primary alone while t > v1, SNB for t <= v1
    assert [uses_snb(t, v1, 1) for t in (991, 601, 600, 1)] == [False, False, True, True]
    # mode 2: SNB while t > v1, then primary alone
    assert [uses_snb(t, v1, 2) for t in (991, 601, 600, 1)] == [True, True, False, False]
