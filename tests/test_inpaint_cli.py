"""The inpainter and the `cellpaint` CLI on a tiny random model (fast; quality is tested elsewhere)."""
import numpy as np
import pytest
from PIL import Image

from cellpaint.cli import main, parser
from shared.options import GENERATE_GUIDANCE as DEFAULT_GENERATE_GUIDANCE, GENERATE_SAMPLER as DEFAULT_GENERATE_SAMPLER
from gpu_job.inpainter.inpaint import Inpainter, InpaintOptions
from shared.options import OWN_MACHINE
from shared.imaging.images import load_image
from tests.conftest import synthetic_cell


def write_pair(folder, name, rng, h=90, w=110, box=(20, 50, 30, 70)):
    img = synthetic_cell(rng, h, w)
    mask = np.zeros((h, w), np.uint8)
    y0, y1, x0, x1 = box
    mask[y0:y1, x0:x1] = 255
    Image.fromarray(img).save(folder / f"{name}.png")
    Image.fromarray(mask).save(folder / f"{name}.mask.png")
    return img, mask > 127


def test_inpaint_keeps_outside_and_size(tiny_weights, rng):
    inp = Inpainter(tiny_weights, "cpu")
    img = synthetic_cell(rng, 77, 93)
    mask = np.zeros((77, 93), bool)
    mask[10:40, 20:60] = True
    res = inp.inpaint(img, mask, InpaintOptions(steps=4, samples=3, seed=5))
    assert res.image.shape == img.shape
    assert np.array_equal(res.image[~mask], img[~mask])
    assert len(res.samples) == 3 and res.std.shape == mask.shape
    assert res.std[~mask].max() == 0 and res.std[mask].mean() > 0
    again = inp.inpaint(img, mask, InpaintOptions(steps=4, samples=3, seed=5))
    assert np.array_equal(again.image, res.image)


def test_large_image_uses_windows(tiny_weights, rng):
    inp = Inpainter(tiny_weights, "cpu")
    img = synthetic_cell(rng, 700, 900)
    mask = np.zeros((700, 900), bool)
    mask[50:80, 60:100] = True
    mask[600:650, 800:850] = True
    res = inp.inpaint(img, mask, InpaintOptions(steps=3, window=200))
    assert res.image.shape == img.shape and np.array_equal(res.image[~mask], img[~mask])
    assert not np.array_equal(res.image[mask], img[mask])


def test_unknown_label(tiny_weights):
    with pytest.raises(ValueError, match="unknown label 'dragon'"):
        Inpainter(tiny_weights, "cpu").label_index("dragon")


def test_cli_inpaint_one_pair_with_samples(tiny_weights, tmp_path, rng):
    img, mask = write_pair(tmp_path, "cell", rng)
    out = tmp_path / "out" / "cell.png"
    rc = main(["inpaint", str(tmp_path / "cell.png"), str(tmp_path / "cell.mask.png"), "-o", str(out),
               "--weights", str(tiny_weights), "--steps", "3", "--samples", "2", "--label", "neutrophil"])
    assert rc == 0
    got = load_image(str(out))
    assert got.shape == img.shape and np.array_equal(got[~mask], img[~mask])
    assert (tmp_path / "out" / "cell.std.png").exists()


def test_cli_pairs_folder(tiny_weights, tmp_path, rng):
    src = tmp_path / "in"
    src.mkdir()
    for n in ("a", "b", "c"):
        write_pair(src, n, rng)
    (src / "lonely.png").write_bytes((src / "a.png").read_bytes())
    rc = main(["inpaint", "--pairs", str(src), "-o", str(tmp_path / "out"), "--weights", str(tiny_weights), "--steps", "2"])
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png", "c.png"]  # the default: one sample
    # several samples: each result comes with its uncertainty map
    rc = main(["inpaint", "--pairs", str(src), "-o", str(tmp_path / "out2"), "--weights", str(tiny_weights), "--steps", "2", "--samples", "2"])
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == ["a.png", "a.std.png", "b.png", "b.std.png", "c.png", "c.std.png"]


@pytest.mark.parametrize("case,expect", [
    ("not-image", "notes.png: not a readable image"),
    ("size", "mask is 20x20"),
    ("empty", "mask is empty"),
    ("label", "unknown label 'dragon'"),
])
def test_cli_bad_input_one_line_exit_2(tiny_weights, tmp_path, rng, capsys, case, expect):
    write_pair(tmp_path, "cell", rng)
    image, mask, extra = tmp_path / "cell.png", tmp_path / "cell.mask.png", []
    if case == "not-image":
        image = tmp_path / "notes.png"
        image.write_text("not an image")
    elif case == "size":
        Image.fromarray(np.full((20, 20), 255, np.uint8)).save(mask)
    elif case == "empty":
        Image.fromarray(np.zeros((90, 110), np.uint8)).save(mask)
    else:
        extra = ["--label", "dragon"]
    rc = main(["inpaint", str(image), str(mask), "-o", str(tmp_path / "o.png"), "--weights", str(tiny_weights), "--steps", "2", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and expect in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_sample_writes_cells_and_grid(tiny_weights, tmp_path):
    rc = main(["sample", "-n", "4", "--label", "platelet", "-o", str(tmp_path), "--weights", str(tiny_weights), "--steps", "2"])
    assert rc == 0
    assert len(list(tmp_path.glob("cell-*.png"))) == 4 and (tmp_path / "grid.png").exists()


def test_generate_guides_only_with_a_label(tiny_weights, monkeypatch):
    inp = Inpainter(tiny_weights, "cpu")
    seen = []
    run = inp._run
    monkeypatch.setattr(inp, "_run", lambda known, mask, labels, seeds, opts: seen.append((labels, opts.guidance)) or run(known, mask, labels, seeds, opts))
    inp.generate(2, "platelet", seed=1, steps=2)  # the default guidance applies with a label
    assert seen == [([inp.classes.index("platelet")] * 2, DEFAULT_GENERATE_GUIDANCE)]
    calls = []
    inp.model.register_forward_hook(lambda mod, args, out: calls.append(len(out)))
    unguided, calls_1 = inp.generate(2, None, seed=1, steps=2, guidance=1.0), list(calls)
    # Without a label, guided = unguided: the sampler skips the second model call, same cells.
    assert np.array_equal(inp.generate(2, None, seed=1, steps=2, guidance=3.0), unguided)
    assert calls == calls_1 + calls_1 == [2, 2, 2, 2]
    calls.clear()
    inp.generate(2, "platelet", seed=1, steps=2, guidance=3.0)
    assert calls == [4, 4]  # with a label: conditional and unconditional in one batch


def test_generate_any_draws_classes_from_the_training_mix(tiny_weights, tmp_path, monkeypatch):
    inp = Inpainter(tiny_weights, "cpu")
    assert np.allclose(inp.class_shares(), 1 / 8)  # weights without class counts: uniform
    counts = dict.fromkeys(inp.classes, 0) | {"eosinophil": 3, "platelet": 1}
    inp.record["training"]["class_counts"] = counts
    labels = inp.generate_labels(4000, "any", seed=3)
    assert labels == inp.generate_labels(4000, "any", seed=3)  # reproducible from the seed
    share = np.bincount(labels, minlength=8) / 4000
    assert set(np.flatnonzero(share)) == {1, 7} and abs(share[1] - 0.75) < 0.03
    assert inp.generate_labels(3, None, 0) == [8] * 3 and inp.generate_labels(2, "ig", 0) == [3, 3]
    with pytest.raises(ValueError, match="unknown label 'any'"):
        inp.label_index("any")  # inpainting takes one class or none: "any" means nothing there
    seen = []
    run = inp._run
    monkeypatch.setattr(inp, "_run", lambda known, mask, labels, seeds, opts: seen.append((labels, opts.guidance)) or run(known, mask, labels, seeds, opts))
    inp.generate(5, "any", seed=2, steps=2)
    assert seen == [(inp.generate_labels(5, "any", 2), DEFAULT_GENERATE_GUIDANCE)]  # guided, like any label
    assert parser().parse_args(["sample", "-o", "x"]).label == "any"
    assert parser().parse_args(["inpaint", "a", "b", "-o", "x"]).label == "auto"  # inpainting guesses the class
    assert main(["sample", "-n", "1", "--label", "bogus", "-o", str(tmp_path), "--weights", str(tiny_weights)]) != 0


def test_generate_samples_ancestrally_by_default(tiny_weights):
    # DDIM's deterministic steps left speckled backgrounds on generated cells (defaults.py).
    inp = Inpainter(tiny_weights, "cpu")
    cells = inp.generate(2, None, seed=1, steps=3)
    assert np.array_equal(cells, inp.generate(2, None, seed=1, steps=3, sampler="ddpm"))
    assert not np.array_equal(cells, inp.generate(2, None, seed=1, steps=3, sampler="ddim"))
    assert parser().parse_args(["sample", "-o", "x"]).sampler == DEFAULT_GENERATE_SAMPLER == "ddpm"
    assert parser().parse_args(["inpaint", "a", "b", "-o", "x"]).sampler == "ddim"


def test_combine_mean_and_first(tiny_weights, rng):
    inp = Inpainter(tiny_weights, "cpu")
    img = synthetic_cell(rng, 60, 70)
    mask = np.zeros((60, 70), bool)
    mask[15:45, 20:50] = True
    mean = inp.inpaint(img, mask, InpaintOptions(steps=3, samples=4, seed=2, combine="mean"))
    first = inp.inpaint(img, mask, InpaintOptions(steps=3, samples=4, seed=2, combine="first"))
    assert all(np.array_equal(a, b) for a, b in zip(mean.samples, first.samples))  # same samples, different output
    assert not np.array_equal(first.image, mean.image) and np.array_equal(mean.image[~mask], img[~mask])
    # samples are plain pastes; without the seam fix the output is sample 0, or their mean. The mean
    # is taken at model resolution, before upsampling: equal to rounding for smooth predictions, and
    # for this random model's noise (clipped at 0 and 255 on upsampling) still far closer to the
    # samples' mean than any sample is.
    plain = dict(steps=3, samples=4, seed=2, seam=False, texture=False, fallback=0.0)  # the first stage's output as it is
    assert np.array_equal(inp.inpaint(img, mask, InpaintOptions(**plain, combine="first")).image, first.samples[0])
    avg = np.stack(mean.samples).astype(np.float32).mean(0)[mask]
    err = lambda a: np.abs(a[mask].astype(np.float32) - avg).mean()  # noqa: E731
    assert err(inp.inpaint(img, mask, InpaintOptions(**plain, combine="mean")).image) < 0.25 * min(err(s) for s in mean.samples)
    with pytest.raises(ValueError, match="combine must be one of mean, first, nearest, got 'median'"):
        InpaintOptions(steps=3, samples=2, combine="median").check(OWN_MACHINE)  # where options enter, once


def test_pairs_of_different_temperatures_in_one_call(tiny_weights, rng):
    inp = Inpainter(tiny_weights, "cpu")
    img = synthetic_cell(rng, 60, 70)
    mask = np.zeros((60, 70), bool)
    mask[15:45, 20:50] = True
    # The first stage alone: the texture stage batches tiles across pairs, and bf16 moves by a level with the batch.
    cool, warm = InpaintOptions(steps=3, temperature=0.5, texture=False), InpaintOptions(steps=3, temperature=1.0, texture=False)
    both = inp.inpaint_many([(img, mask), (img, mask)], [cool, warm])
    assert np.array_equal(both[0].image, inp.inpaint(img, mask, cool).image)
    assert np.array_equal(both[1].image, inp.inpaint(img, mask, warm).image)
    assert not np.array_equal(both[0].image, both[1].image)


def test_an_unset_temperature_is_the_models_own(tiny_weights, rng, tmp_path):
    """temperature None: the one the weights' record names (`sampling`), else the PBC model's."""
    import json
    import shutil

    from shared.options import TEMPERATURE

    own = tmp_path / "cool.safetensors"
    shutil.copyfile(tiny_weights, own)
    rec = json.loads(tiny_weights.with_suffix(".json").read_text())
    own.with_suffix(".json").write_text(json.dumps({**rec, "sampling": {"temperature": 0.0}}))
    img = synthetic_cell(rng, 60, 70)
    mask = np.zeros((60, 70), bool)
    mask[15:45, 20:50] = True
    fill = lambda w, t: Inpainter(w, "cpu").inpaint(img, mask, InpaintOptions(steps=3, texture=False, temperature=t)).image  # noqa: E731
    assert InpaintOptions().temperature is None
    assert np.array_equal(fill(own, None), fill(own, 0.0)) and not np.array_equal(fill(own, None), fill(own, TEMPERATURE))
    assert np.array_equal(fill(tiny_weights, None), fill(tiny_weights, TEMPERATURE))  # a record that names none
    assert np.array_equal(fill(own, 1.0), fill(tiny_weights, 1.0))  # a temperature given is the one used
    # several samples keep the PBC model's spread, so that they differ and their spread means something
    several = lambda t: Inpainter(own, "cpu").inpaint(img, mask, InpaintOptions(steps=3, texture=False, samples=2, temperature=t))  # noqa: E731
    assert np.array_equal(several(None).std, several(TEMPERATURE).std)


def test_seam_changes_only_the_inside(tiny_weights, rng):
    inp = Inpainter(tiny_weights, "cpu")
    img = synthetic_cell(rng, 60, 70)
    mask = np.zeros((60, 70), bool)
    mask[15:45, 20:50] = True
    with_seam = inp.inpaint(img, mask, InpaintOptions(steps=3, samples=1, seam=True))
    without = inp.inpaint(img, mask, InpaintOptions(steps=3, samples=1, seam=False))
    assert np.array_equal(with_seam.image[~mask], img[~mask]) and np.array_equal(without.image[~mask], img[~mask])
    assert not np.array_equal(with_seam.image[mask], without.image[mask])


def test_cli_combine_and_no_seam_flags(tiny_weights, tmp_path, rng):
    img, mask = write_pair(tmp_path, "cell", rng)
    outs = {}
    for flags in (["--combine", "first", "--samples", "2"], ["--combine", "first", "--samples", "2", "--no-seam"]):
        out = tmp_path / f"{len(flags)}.png"
        assert main(["inpaint", str(tmp_path / "cell.png"), str(tmp_path / "cell.mask.png"), "-o", str(out),
                     "--weights", str(tiny_weights), "--steps", "3", *flags]) == 0
        outs[len(flags)] = load_image(str(out))
    assert np.array_equal(outs[4][~mask], img[~mask]) and np.array_equal(outs[5][~mask], img[~mask])
    assert not np.array_equal(outs[4], outs[5])
