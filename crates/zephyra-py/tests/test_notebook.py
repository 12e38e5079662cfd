"""The notebook flow of the issue, end to end: load → harvest 50k tokens → train → evaluate → steer."""

import numpy as np

import zephyra as z

HOOK = "blocks.15.hook_resid_pre"


def test_load_harvest_train_evaluate_steer(tmp_path):
    model = z.Model.load("smollm2")
    logits, cache = model.run_with_cache("The capital of France is", names=[HOOK])
    assert cache[HOOK].shape[1] == 576 and logits.shape == (49152,)

    acts = z.harvest(model, hook=HOOK, tokens=50_000)
    assert acts.shape[0] > 40_000 and acts.shape[1] == 576

    sae = z.train(acts, arch="topk", k=32, expansion=4, tokens=150_000, batch_rows=1024)
    codes = sae.encode(acts[:1000])
    recon = sae.decode(codes)
    assert ((codes > 0).sum(axis=1) <= 32).all()
    fve = 1 - ((recon - acts[:1000]) ** 2).sum() / ((acts[:1000] - acts[:1000].mean(0)) ** 2).sum()
    assert fve > 0.5, fve

    report = z.evaluate(sae, model, tokens=4096, ce_tokens=512)
    assert report["hook"] == HOOK and report["figures"]["reconstruction"]["fve"] > 0.3

    busiest = int(np.argmax((codes > 0).sum(axis=0)))
    text = model.generate("I think", max_tokens=12, steer={"sae": sae, "feature": busiest, "strength": 80})
    assert text != model.generate("I think", max_tokens=12)

    sae.save(tmp_path / "l15")
    back = z.SAE.load(tmp_path / "l15")
    np.testing.assert_array_equal(back.encode(acts[:10]), sae.encode(acts[:10]))
