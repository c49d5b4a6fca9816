import numpy as np
import pytest

from anomaly_ae.postprocessing import (
    expected_fpr,
    f1_threshold,
    fit_threshold,
    mad_threshold,
    max_threshold,
    normalize,
)


def test_mad_threshold_hand_value():
    s = np.array([1.0, 2.0, 3.0, 4.0, 100.0])  # median 3, MAD median(|2,1,0,1,97|) = 1
    assert mad_threshold(s, 3.0) == pytest.approx(3 + 3 * 1.4826)
    assert fit_threshold(s, "mad", mad_k=2.0) == pytest.approx(3 + 2 * 1.4826)
    assert max_threshold(s) == fit_threshold(s, "max") == 100.0


def test_f1_threshold_hand_value():
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    y = np.array([0, 0, 1, 0, 1], bool)
    t, f1 = f1_threshold(s, y)
    assert f1 == pytest.approx(0.8)
    assert t == pytest.approx(0.25)  # half-way below the lowest flagged score
    assert fit_threshold(s, "f1", labels=y) == t
    with pytest.raises(ValueError, match="needs labelled"):
        fit_threshold(s, "f1")
    # quantile/mad/max ignore the anomalous examples when labels are given
    assert fit_threshold(s, "max", labels=y) == 0.4


def test_expected_fpr_conformal():
    s = np.arange(10.0)
    assert expected_fpr(s, 8.5) == pytest.approx(2 / 11)
    assert expected_fpr(s, 9.0) == pytest.approx(1 / 11)  # the max still leaves 1/(n+1)
    assert expected_fpr(s, -1.0) == pytest.approx(11 / 11)


def test_normalize_puts_threshold_at_half():
    s = np.array([0.0, 1.0, 2.0, 10.0])
    n = normalize(s, threshold=1.0, lo=0.0, hi=2.0)
    np.testing.assert_allclose(n, [0.0, 0.5, 1.0, 1.0])
    assert np.all(np.diff(normalize(np.linspace(0, 2, 9), 1.0, 0.0, 2.0)) >= 0)


# ------------------------------------------------------------------ small data: guard rails
from anomaly_ae.config import ThresholdConfig  # noqa: E402
from anomaly_ae.postprocessing import (  # noqa: E402
    MIN_QUANTILE_SCORES,
    PostProcessor,
    fpr_upper_bound,
    small_sample_threshold,
)


@pytest.mark.parametrize("n", [1, 4, 30, 100])
def test_fpr_upper_bound_above_all_scores_has_the_closed_form(n):
    # m = 0 of n above: FPR <= Beta(1, n), whose 0.95 quantile is 1 - 0.05 ** (1 / n)
    s = np.arange(n, dtype=float)
    assert fpr_upper_bound(s, n + 1.0) == pytest.approx(1 - 0.05 ** (1 / n), rel=1e-9)


def test_fpr_upper_bound_matches_the_beta_quantile_and_covers_by_simulation():
    scipy_stats = pytest.importorskip("scipy.stats")
    s = np.arange(50, dtype=float)
    assert fpr_upper_bound(s, 46.5) == pytest.approx(scipy_stats.beta.ppf(0.95, 4, 47), rel=1e-9)  # m = 3
    assert fpr_upper_bound(s, -1.0) == 1.0  # every score above: nothing bounds it
    # distribution-free: over many calibration draws the true FPR exceeds the bound in <= 5% of them
    rng = np.random.default_rng(0)
    misses = 0
    for _ in range(400):
        cal = rng.exponential(size=8)
        t = max_threshold(cal)
        misses += np.exp(-t) > fpr_upper_bound(cal, t)  # true FPR of an Exp(1) score
    assert misses / 400 <= 0.08


def test_quantile_rule_falls_back_below_the_minimum_and_says_so():
    rng = np.random.default_rng(1)
    few, many = rng.normal(size=4), rng.normal(size=MIN_QUANTILE_SCORES)
    maps = np.zeros((4, 8, 8))
    post = PostProcessor.fit(few, maps, ThresholdConfig(method="quantile", quantile=0.99))
    assert post.threshold == small_sample_threshold(few, 0.99) >= few.max()
    assert post.threshold == pytest.approx(max(few.max(), mad_threshold(few, 2.3263479)))  # z of 0.99
    assert "as 4 are too few for an empirical quantile (it needs 20)" in post.rule
    assert post.expected_fpr == pytest.approx(1 / 5) and post.fpr_upper == pytest.approx(1 - 0.05 ** 0.25)
    assert set(post.caveats()) == {"few_good"} and "up to 53%" in post.caveats()["few_good"]
    assert set(post.caveats(self_check_auroc=0.47)) == {"few_good", "self_check"}
    enough = PostProcessor.fit(many, np.zeros((len(many), 8, 8)), ThresholdConfig(method="quantile", quantile=0.99))
    assert enough.threshold == pytest.approx(np.quantile(many, 0.99)) and enough.rule.startswith("quantile 0.99 of 20")
    assert enough.caveats(self_check_auroc=0.9) == {}
    # other rules are applied as asked, whatever the count
    assert PostProcessor.fit(few, maps, ThresholdConfig(method="max")).threshold == few.max()


def test_a_model_saved_before_the_bound_gets_it_from_its_scores():
    s = np.linspace(0, 1, 10)
    post = PostProcessor.fit(s, np.zeros((10, 4, 4)), ThresholdConfig(method="max"))
    d = post.to_dict(ThresholdConfig(method="max"))
    for key in ("fpr_upper", "rule", "fpr_confidence"):
        del d["threshold"][key]
    old = PostProcessor.from_dict(d)
    assert old.fpr_upper == pytest.approx(post.fpr_upper) and old.rule == "the highest of 10 good scores"


def test_few_scores_get_a_wider_normalization_range():
    """4 scores: an image just over the threshold read 0.85 on their narrow span."""
    few = np.array([1.0, 1.1, 1.2, 1.3])
    post = PostProcessor.fit(few, np.zeros((4, 4, 4)), ThresholdConfig(method="quantile", quantile=0.99))
    lo, hi = post.norm_range
    t, med = post.threshold, float(np.median(few))
    assert (lo, hi) == (pytest.approx(2 * med - t), pytest.approx(t)) and hi - lo > few.max() - few.min()
    assert post.normalize(np.array([t]))[0] == pytest.approx(0.5)
    assert post.normalize(np.array([med]))[0] == pytest.approx(0.0, abs=1e-9)
    assert post.normalize(np.array([t + 0.05]))[0] < 0.6  # just over the threshold is just over 0.5
    many = np.linspace(1, 2, 40)  # enough scores: the plain min and max, as before
    assert PostProcessor.fit(many, np.zeros((40, 4, 4)), ThresholdConfig()).norm_range == (1.0, 2.0)
