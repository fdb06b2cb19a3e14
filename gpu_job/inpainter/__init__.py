"""The inpainter: the model, its diffusion and sampler, the texture stage, the labeller, the
out-of-distribution score, the guard and the classical fills, and `Inpainter`, which runs them
on image/mask pairs. The inference path: it imports neither training nor evaluation."""
