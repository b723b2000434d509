"""Behaviour of the stylise API: alpha paths, interpolation, batches, sizes, bad inputs."""
import pytest
import torch
from PIL import Image

from mccstn.network import discriminator_size_problem, encoder_size_problem
from mccstn.stylize import coral, pil_to_tensor, resize_long_side
from tests.test_mccstn_common import load_png, parity_model, parity_weights, single_thread
from tests.test_mccstn_common import model, weights  # noqa: F401  (shared fixtures)


@pytest.fixture(autouse=True)
def _one_thread():
    yield from single_thread()


@pytest.fixture(scope="module")
def images():
    return load_png("content_a.png"), load_png("style_a.png")


def test_alpha_zero_is_content_reconstruction(model, images):
    c, s = images
    out = model.stylize(c, s, alpha=0.0)
    with torch.no_grad():
        cf = model.encode(c)
        manual = model.decoder(model.fuse(cf, cf, model.aesthetic(c)))
    assert torch.equal(out, manual)
    assert torch.equal(out, model.reconstruct(c))


def test_alpha_one_is_pure_style_path_and_blend_in_between(model, images):
    c, s = images
    with torch.no_grad():
        cf, sf = model.encode(c), model.encode(s)
        f_cs = model.fuse(cf, sf, model.aesthetic(s))
        f_cc = model.fuse(cf, cf, model.aesthetic(c))
        pure = model.decoder(f_cs)
        half = model.decoder(f_cs * 0.5 + f_cc * 0.5)
    assert torch.equal(model.stylize(c, s, alpha=1.0), pure)
    torch.testing.assert_close(model.stylize(c, s, alpha=0.5), half, atol=1e-5, rtol=0)
    assert not torch.allclose(pure, model.stylize(c, s, alpha=0.0), atol=1e-3)


def test_interpolation_weights_one_zero_equal_single_style(model, images):
    c, s = images
    other = torch.flip(s, dims=[3]).roll(7, dims=2)
    single = model.stylize(c, s)
    torch.testing.assert_close(model.stylize_interpolated(c, [s, other], [1, 0]), single, atol=1e-6, rtol=0)
    torch.testing.assert_close(model.stylize_interpolated(c, [other, s], [0, 3]), single, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="weights"):
        model.stylize_interpolated(c, [s, other], [0, 0])
    with pytest.raises(ValueError, match="2 styles"):
        model.stylize_interpolated(c, [s, other], [1])


def test_content_batch_matches_single_runs(model, images):
    c, s = images
    c2 = torch.flip(c, dims=[2])
    both = model.stylize(torch.cat([c, c2]), s)
    torch.testing.assert_close(both[1:], model.stylize(c2, s), atol=2e-5, rtol=0)


def test_output_is_8_aligned_and_image_api_crops_back(model):
    g = torch.Generator().manual_seed(1)
    c = torch.rand(1, 3, 67, 130, generator=g)
    s = torch.rand(1, 3, 70, 126, generator=g)
    assert model.stylize(c, s).shape == (1, 3, 72, 136)
    img = Image.fromarray((c[0].permute(1, 2, 0).numpy() * 255).astype("uint8"))
    out = model.stylize_image(img, Image.fromarray((s[0].permute(1, 2, 0).numpy() * 255).astype("uint8")))
    assert out.size == (130, 67) and out.mode == "RGB"
    out = model.stylize_image(img, img, long_side=96)
    assert out.size == resize_long_side(img, 96).size == (96, 49)


def test_bad_inputs_get_clear_errors(model, images, tmp_path):
    c, s = images
    with pytest.raises(ValueError, match=r"alpha must lie in \[0,1\]"):
        model.stylize(c, s, alpha=1.5)
    with pytest.raises(ValueError, match=r"alpha must lie in \[0,1\]"):
        model.stylize(c, s, alpha=-0.1)
    with pytest.raises(ValueError, match="encoder"):
        model.stylize(torch.rand(1, 3, 1, 1), s)
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        model.stylize(c * 255, s)
    with pytest.raises(ValueError, match=r"\(N,3,H,W\)"):
        model.stylize(c[0], s)
    with pytest.raises(ValueError, match=r"\(N,3,H,W\)"):
        model.stylize(c[:, :1], s)
    with pytest.raises(TypeError, match="uint8"):
        model.stylize((c * 255).to(torch.uint8), s)
    with pytest.raises(ValueError, match="NaN"):
        model.stylize(torch.full_like(c, float("nan")), s)
    # a 1x1 image file through the image API
    Image.new("RGB", (1, 1), (10, 20, 30)).save(tmp_path / "dot.png")
    with pytest.raises(ValueError, match="1x1"):
        model.stylize_image(tmp_path / "dot.png", tmp_path / "dot.png")
    # a non-image file
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(ValueError, match="not a readable image"):
        model.stylize_image(tmp_path / "notes.png", tmp_path / "dot.png")


def test_small_style_error_or_upsample_fallback(model, images):
    c, _ = images
    small = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(2))
    with pytest.raises(ValueError, match="61 px.*125 px"):
        model.stylize(c, small)
    out = model.stylize(c, small, small_images="upsample")
    assert out.shape == (1, 3, 128, 128) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="small_images"):
        model.stylize(c, small, small_images="ignore")


def test_size_rules():
    assert discriminator_size_problem(61, 125) is None
    assert discriminator_size_problem(60, 200) is not None
    assert discriminator_size_problem(70, 124) is not None
    assert discriminator_size_problem(124, 124) is not None
    assert encoder_size_problem(17, 17) is None
    assert encoder_size_problem(16, 64) is not None
    assert encoder_size_problem(9, 17) is not None


def test_preserve_color(model, images):
    c, s = images
    moved = coral(s[0], c[0])
    torch.testing.assert_close(moved.reshape(3, -1).mean(1), c[0].reshape(3, -1).mean(1), atol=1e-4, rtol=0)
    # the reference's covariances carry no 1/N, so with different pixel counts the recoloured
    # std is the content's times sqrt(N_content / N_style) (a quirk kept for parity)
    ratio = (c[0, 0].numel() / s[0, 0].numel()) ** 0.5
    torch.testing.assert_close(moved.reshape(3, -1).std(1), c[0].reshape(3, -1).std(1) * ratio,
                               atol=1e-3, rtol=0)
    same = coral(s[0, :, :, :96], c[0, :, :, :96])
    torch.testing.assert_close(same.reshape(3, -1).std(1), c[0, :, :, :96].reshape(3, -1).std(1),
                               atol=1e-3, rtol=0)
    with torch.no_grad():
        s2 = coral(s[0], c[0]).unsqueeze(0)
        expected = model.decoder(model.fuse(model.encode(c), model.encode(s2), model.aesthetic(s2)))
    assert torch.equal(model.stylize(c, s, preserve_color=True), expected)


def test_pil_round_trip():
    img = Image.new("RGB", (5, 4), (255, 0, 128))
    t = pil_to_tensor(img)
    assert t.shape == (1, 3, 4, 5) and float(t.max()) == 1.0
    from mccstn.stylize import tensor_to_pil

    assert list(tensor_to_pil(t).getdata()) == list(img.getdata())
