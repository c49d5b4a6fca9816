import numpy as np
import pytest
from keras import ops
from skimage.metrics import structural_similarity

from anomaly_ae.models.losses import reconstruction_loss, ssim


def _np(t):
    return ops.convert_to_numpy(t)


def _handwritten_ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The SSIM loss anomaly-ae used before ``keras.ops.image.ssim`` (Gaussian 11x11, sigma 1.5, valid), in NumPy."""
    from scipy.signal import correlate2d

    ax = np.arange(11, dtype=np.float64) - 5.0
    g = np.exp(-(ax**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    out = []
    for x, y in zip(a.astype(np.float64), b.astype(np.float64), strict=True):
        maps = []
        for c in range(x.shape[-1]):
            def blur(t, c=c):
                return correlate2d(t, w, mode="valid")
            xc, yc = x[..., c], y[..., c]
            mx, my = blur(xc), blur(yc)
            vx, vy, cov = blur(xc * xc) - mx**2, blur(yc * yc) - my**2, blur(xc * yc) - mx * my
            c1, c2 = 0.01**2, 0.03**2
            maps.append(((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
        out.append(np.mean(maps))
    return np.array(out)


@pytest.mark.parametrize("shape", [(2, 16, 16, 1), (3, 32, 24, 3), (1, 11, 11, 1)])
def test_keras_ssim_gives_the_numbers_of_the_handwritten_loss(shape):
    rng = np.random.default_rng(0)
    a = rng.random(shape).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.1, shape), 0, 1).astype(np.float32)
    got = _np(ssim(ops.convert_to_tensor(a), ops.convert_to_tensor(b)))
    np.testing.assert_allclose(got, _handwritten_ssim(a, b), atol=2e-6)
    assert got.max() < 0.99  # the noise is seen


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_matches_skimage(channels):
    rng = np.random.default_rng(0)
    a = rng.random((2, 40, 36, channels)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1).astype(np.float32)
    b[1] = np.clip(a[1] * 0.7 + 0.1, 0, 1)  # a second kind of difference: contrast and brightness
    ours = _np(ssim(ops.convert_to_tensor(a), ops.convert_to_tensor(b)))
    for i in range(2):
        ref = structural_similarity(
            a[i], b[i], data_range=1.0, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, channel_axis=-1,
        )
        assert ours[i] == pytest.approx(ref, abs=1e-4)
    assert ours[0] < 0.97 and ours[1] < 0.97  # both differences are seen


def test_ssim_of_identical_images_is_one():
    a = np.random.default_rng(1).random((2, 16, 16, 1)).astype(np.float32)
    np.testing.assert_allclose(_np(ssim(ops.convert_to_tensor(a), ops.convert_to_tensor(a))), 1.0, atol=1e-5)


def test_pixel_losses_on_hand_made_arrays():
    x = np.array([[[[0.0], [1.0]], [[0.5], [0.5]]]], np.float32)  # (1, 2, 2, 1)
    y = np.array([[[[0.5], [1.0]], [[0.0], [0.5]]]], np.float32)
    X, Y = ops.convert_to_tensor(x), ops.convert_to_tensor(y)
    assert float(_np(reconstruction_loss("mse", X, Y))) == pytest.approx((0.25 + 0.25) / 4)
    assert float(_np(reconstruction_loss("l1", X, Y))) == pytest.approx((0.5 + 0.5) / 4)
    p = np.clip(y, 1e-7, 1 - 1e-7)
    bce = -np.mean(x * np.log(p) + (1 - x) * np.log(1 - p))
    assert float(_np(reconstruction_loss("bce", X, Y))) == pytest.approx(bce, rel=1e-5)


def test_ssim_losses_combine_as_documented():
    rng = np.random.default_rng(2)
    a = rng.random((2, 24, 24, 1)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1).astype(np.float32)
    A, B = ops.convert_to_tensor(a), ops.convert_to_tensor(b)
    s = float(np.mean(_np(ssim(A, B))))
    l1 = float(np.mean(np.abs(a - b)))
    assert float(_np(reconstruction_loss("ssim", A, B))) == pytest.approx(1 - s, rel=1e-5)
    got = float(_np(reconstruction_loss("ssim_l1", A, B, ssim_weight=0.3)))
    assert got == pytest.approx(0.3 * (1 - s) + 0.7 * l1, rel=1e-5)
    with pytest.raises(ValueError, match="unknown loss"):
        reconstruction_loss("huber", A, B)


def test_soft_dice_and_dice_bce_hand_values():
    from anomaly_ae.models.losses import dice_bce_loss, soft_dice

    y = np.array([[1.0, 0.0, 0.0, 0.0]], np.float32)
    p = np.array([[0.5, 0.5, 0.0, 0.0]], np.float32)
    # (2 * 0.5 + 1) / (1 + 1 + 1) = 2/3
    assert float(_np(soft_dice(ops.convert_to_tensor(y), ops.convert_to_tensor(p)))) == pytest.approx(2 / 3)
    bce = -(np.log(0.5) + np.log(0.5) + 2 * np.log(1 - 1e-7)) / 4
    got = float(_np(dice_bce_loss(ops.convert_to_tensor(y), ops.convert_to_tensor(p))))
    assert got == pytest.approx(bce + 1 / 3, rel=1e-5)
    # Dice keeps the rare positives in play: predicting background everywhere costs ~1, not ~0
    rare = np.zeros((1, 1000), np.float32)
    rare[0, :2] = 1.0
    background = np.full_like(rare, 1e-4)
    assert float(_np(dice_bce_loss(ops.convert_to_tensor(rare), ops.convert_to_tensor(background)))) > 0.6


def test_mask_losses_from_logits_match_the_formulas_and_keep_a_gradient_when_saturated():
    from anomaly_ae.models.losses import dice_bce_loss, mask_loss

    rng = np.random.default_rng(0)
    y = (rng.random((2, 8, 8)) < 0.1).astype("float32")
    z = rng.normal(0, 2, (2, 8, 8)).astype("float32")
    p = 1 / (1 + np.exp(-z))
    p_t = np.where(y > 0, p, 1 - p)
    expected_focal = np.mean(-((1 - p_t) ** 2) * np.log(p_t))
    focal = float(mask_loss("focal", y, ops.convert_to_tensor(z)))
    np.testing.assert_allclose(focal, expected_focal, rtol=1e-4)
    np.testing.assert_allclose(float(mask_loss("bce_dice", y, ops.convert_to_tensor(z))),
                               float(dice_bce_loss(y, ops.convert_to_tensor(p))), rtol=1e-4)
    # a network pushed to "background everywhere" (logit -30, p ~ 1e-13) still gets a gradient on its defects
    import tensorflow as tf

    logits = tf.Variable(np.full((1, 4, 4), -30.0, "float32"))
    target = np.zeros((1, 4, 4), "float32")
    target[0, 1, 1] = 1
    for name in ("focal", "bce_dice"):
        with tf.GradientTape() as tape:
            loss = mask_loss(name, target, logits)
        grad = tape.gradient(loss, logits).numpy()
        assert grad[0, 1, 1] < -1e-3, (name, grad[0, 1, 1])  # pushes the defect pixel up
