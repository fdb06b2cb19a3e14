import numpy as np
import pytest
import torch

from gpu_job.inpainter.diffusion import Diffusion, DiffusionConfig, linear_beta_schedule, training_loss
from gpu_job.inpainter.model import UNet, UNetConfig
from gpu_job.inpainter.sampler import sample, sampler_loss, timesteps, unrolled
from gpu_job.inpainter.weights import load_weights, save_weights

TINY = dict(image_size=16, base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attn_resolutions=(8,), groups=4)


def test_linear_schedule_matches_the_paper():
    b = linear_beta_schedule(1000, 1e-4, 0.02)
    assert b.dtype == np.float64 and b[0] == 1e-4 and b[-1] == 0.02 and np.allclose(np.diff(b), np.diff(b)[0])
    d = Diffusion(DiffusionConfig())
    assert d.alphas_cumprod.dtype == torch.float32
    assert abs(d.alphas_cumprod[-1].item() - np.prod(1 - b)) < 1e-7  # pure noise at T


def test_unet_shapes_and_label():
    m = UNet(UNetConfig(**TINY))
    with torch.no_grad():  # move off the zero init, so every path (label included) reaches the output
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    x = torch.randn(2, 7, 16, 16)
    t = torch.tensor([0, 999])
    assert m(x, t).shape == (2, 3, 16, 16)
    assert not torch.allclose(m(x, t, torch.tensor([0, 0])), m(x, t, torch.tensor([5, 5])))


def test_timesteps_span_the_schedule():
    assert timesteps(1000, 1000) == list(range(999, -1, -1))
    ts = timesteps(1000, 10)
    assert ts[0] == 999 and ts[-1] == 0 and len(set(ts)) == 10
    with pytest.raises(ValueError):
        timesteps(1000, 0)


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    m = UNet(UNetConfig(**TINY)).eval()
    torch.nn.init.normal_(m.conv_out.weight, std=0.05)
    return m, Diffusion(DiffusionConfig())


@pytest.mark.parametrize("method,steps", [("ddim", 10), ("ddpm", 10)])
def test_known_pixels_exact_and_seeded(tiny, method, steps):
    model, diff = tiny
    g = torch.Generator().manual_seed(1)
    known = torch.rand(3, 3, 16, 16, generator=g) * 2 - 1
    mask = torch.zeros(3, 1, 16, 16)
    mask[:, :, 4:12, 4:12] = 1
    a = sample(model, diff, known=known, mask=mask, seeds=[1, 2, 3], steps=steps, method=method)
    assert a.shape == known.shape
    assert torch.equal(a * (1 - mask), known * (1 - mask))  # known region: exactly the observation
    assert a.abs().max() <= 1
    b = sample(model, diff, known=known, mask=mask, seeds=[1, 2, 3], steps=steps, method=method)
    assert torch.equal(a, b)  # same seed, same output
    c = sample(model, diff, known=known, mask=mask, seeds=[1, 2, 4], steps=steps, method=method)
    assert torch.equal(a[:2], c[:2]) and not torch.equal(a[2], c[2])
    alone = sample(model, diff, known=known[1:2], mask=mask[1:2], seeds=[2], steps=steps, method=method)
    assert torch.allclose(alone, a[1:2], atol=1e-4)  # an image's result does not depend on its batch


def test_reference_sum(tiny):
    """A fixed tiny model, seed and ten steps: guards against silent sampler changes."""
    model, diff = tiny
    known = torch.zeros(1, 3, 16, 16)
    mask = torch.ones(1, 1, 16, 16)
    x = sample(model, diff, known=known, mask=mask, seeds=[0], steps=10)
    assert x.sum().item() == pytest.approx(53.637, abs=0.05)


def test_guidance_changes_output(tiny):
    model, diff = tiny
    known, mask = torch.zeros(1, 3, 16, 16), torch.ones(1, 1, 16, 16)
    lab = torch.tensor([2])
    a = sample(model, diff, known=known, mask=mask, seeds=[0], steps=5, labels=lab)
    b = sample(model, diff, known=known, mask=mask, seeds=[0], steps=5, labels=lab, guidance=3.0)
    assert not torch.equal(a, b)


def test_temperature_narrows_the_spread_of_samples(tiny):
    model, diff = tiny
    known, mask = torch.zeros(12, 3, 16, 16), torch.ones(12, 1, 16, 16)
    spread = {}
    for temp in (0.0, 0.5, 1.0):
        x = sample(model, diff, known=known, mask=mask, seeds=list(range(12)), steps=5, temperature=temp)
        spread[temp] = x.std(0).mean().item()  # across seeds
    # DDIM draws no noise after x_T: at temperature 0 every seed gives the same fill
    assert spread[0.0] == 0.0 and 0.0 < spread[0.5] < spread[1.0]


def test_temperature_leaves_the_sdedit_start_alone(tiny):
    model, diff = tiny
    known, mask = torch.rand(2, 3, 16, 16) * 2 - 1, torch.ones(2, 1, 16, 16)
    run = lambda temp: sample(model, diff, known=known, mask=mask, seeds=[0, 1], steps=2, start=60, whole=True, temperature=temp)  # noqa: E731
    assert torch.equal(run(0.5), run(1.0))  # the texture stage's noise is the forward process's, not a sample's


def test_loss_is_weighted_toward_the_mask(tiny):
    model, diff = tiny
    x0 = torch.rand(4, 3, 16, 16) * 2 - 1
    lab = torch.full((4,), 8)
    t, noise = torch.full((4,), 500), torch.randn(4, 3, 16, 16)
    mask = torch.zeros(4, 1, 16, 16)
    mask[..., :8] = 1
    base = training_loss(model, diff, x0, mask, lab, t=t, noise=noise)
    # Knock the model's known-region error up: the loss barely moves (weight 0.1 there).
    model.conv_out.bias.data += torch.tensor([0.5, 0.5, 0.5])
    assert training_loss(model, diff, x0, mask, lab, t=t, noise=noise) > base


def test_min_snr_weighting_scales_only_the_nearly_clean_timesteps(tiny):
    model, diff = tiny
    x0 = torch.rand(2, 3, 16, 16) * 2 - 1
    lab, mask, noise = torch.full((2,), 8), torch.ones(2, 1, 16, 16), torch.randn(2, 3, 16, 16)
    for t in (900, 10):
        tt = torch.full((2,), t)
        plain = training_loss(model, diff, x0, mask, lab, t=tt, noise=noise)
        weighted = training_loss(model, diff, x0, mask, lab, t=tt, noise=noise, min_snr=5.0)
        snr = diff.snr(tt)[0].item()
        expected = 1.0 if snr < 5 else 5 / snr
        assert weighted.item() == pytest.approx(plain.item() * expected, rel=1e-5)
    assert diff.snr(torch.tensor([900]))[0] < 5 < diff.snr(torch.tensor([10]))[0]  # both branches ran


def test_a_few_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = UNet(UNetConfig(**TINY))
    diff = Diffusion(DiffusionConfig())
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    x0 = torch.rand(8, 3, 16, 16) * 2 - 1
    mask = torch.ones(8, 1, 16, 16)
    lab = torch.full((8,), 8)
    t, noise = torch.randint(0, 1000, (8,)), torch.randn(8, 3, 16, 16)
    first = training_loss(model, diff, x0, mask, lab, t=t, noise=noise).item()
    for _ in range(30):
        loss = training_loss(model, diff, x0, mask, lab, t=t, noise=noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first


def test_unrolled_is_the_sampler_with_gradients(tiny):
    model, diff = tiny
    g = torch.Generator().manual_seed(2)
    known = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 3:11, 5:13] = 1
    kw = dict(known=known, mask=mask, seeds=[4, 5], steps=5, temperature=0.0)
    out = unrolled(model, diff, **kw)
    assert torch.equal(out.detach(), sample(model, diff, **kw))  # the same fill inference draws
    out.sum().backward()
    assert model.conv_out.weight.grad.abs().sum() > 0


def test_training_through_the_sampler_brings_its_fill_nearer_the_truth():
    """sampler_loss: a few steps on it lower the error inside the mask of the fill the sampler
    draws (DDIM-5 at temperature 0, known pixels clamped), the fill inference would give."""
    torch.manual_seed(0)
    model = UNet(UNetConfig(**TINY))
    diff = Diffusion(DiffusionConfig())
    # A small rate, clipped as the training loop clips: through five steps the first one's x0 is
    # its epsilon over sqrt(abar_999) (1/156), and at 1e-3 the fill's error rose tenfold before it fell.
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    y, x = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    x0 = torch.stack([torch.stack([x * a + 0.3, y * a - 0.2, x * y * a]) for a in torch.linspace(0.3, 0.9, 6)])  # smooth, varied
    mask = torch.zeros(6, 1, 16, 16)
    mask[:, :, 5:11, 5:11] = 1

    def loss():
        torch.manual_seed(1)  # the same clamping noise every time: comparable values
        return sampler_loss(model, diff, x0, mask, steps=5, temperature=0.0)

    first = loss().item()
    for _ in range(30):
        value = loss()
        opt.zero_grad()
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    assert loss().item() < 0.2 * first


def test_weights_roundtrip_and_config_check(tmp_path, tiny):
    model, _ = tiny
    path = tmp_path / "w.safetensors"
    save_weights(path, model, DiffusionConfig(), ["a", "b"], {"training": {"steps": 3}})
    loaded, diff, rec = load_weights(path)
    assert rec["classes"] == ["a", "b"] and rec["unet"]["base_channels"] == 8
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    cfg = path.with_suffix(".json")
    import json

    doc = json.loads(cfg.read_text())
    doc["unet"]["wings"] = 2
    cfg.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="wings"):
        load_weights(path)
