"""The toy training script on the CPU: a few steps of every job, then the saved folders load and generate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training import toy_data, toy_models, train_toy


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("toy")
    summary = train_toy.main(
        [
            "--out",
            str(out),
            "--device",
            "cpu",
            "--steps",
            "2",
            "--batch",
            "4",
            "--sample-steps",
            "2",
            "--log-every",
            "1",
            "--pack",
            str(out / "packed"),
        ]
    )
    return out, summary


@pytest.mark.slow
def test_the_pack_holds_each_role_in_an_archive_that_unpacks_to_a_loadable_folder(
    trained: tuple[Path, dict], tmp_path: Path
) -> None:
    import tarfile

    from diffusers import StableDiffusionPipeline

    out, summary = trained
    names = set(summary["packed"])
    assert names == {f"{r}.tar.gz" for r in train_toy.ROLES} | {"components.tar.gz", "logs.tar.gz"}
    assert all(mb < 16 for mb in summary["packed"].values())  # each small enough to copy back alone
    with tarfile.open(out / "packed" / "text_to_image.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    assert isinstance(StableDiffusionPipeline.from_pretrained(tmp_path / "text_to_image"), StableDiffusionPipeline)


@pytest.mark.slow
def test_every_job_logs_finite_losses(trained: tuple[Path, dict]) -> None:
    out, summary = trained
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert {r["model"] for r in records} == {"vae_image", "vae_video", "t2i", "edit", "video"}
    assert all(np.isfinite(r["loss"]) for r in records)
    for name, stats in summary["models"].items():
        assert stats["steps"] == 2 and stats["device"] == "cpu" and np.isfinite(stats["final_loss"]), name
    assert set(summary["roles"]) == set(train_toy.ROLES)
    assert 0 < summary["total_saved_mb"] <= train_toy.MAX_TOTAL_MB
    for name in ("text_to_image", "edit_image", "video", "vae_image", "vae_video"):
        assert Image.open(out / "samples" / f"{name}.png").size[0] > 64
        assert json.loads((out / "samples" / f"{name}.json").read_text())


@pytest.mark.slow
def test_folders_load_into_their_pipelines_and_generate(trained: tuple[Path, dict]) -> None:
    from diffusers import StableDiffusionInstructPix2PixPipeline, StableDiffusionPipeline, WanImageToVideoPipeline

    out, _ = trained
    for role in train_toy.ROLES:
        assert not list((out / role).rglob("*.bin")), role  # safetensors only
        assert not [c for c in (out / role).rglob("config.json") if "_name_or_path" in c.read_text()], role
    gen = torch.Generator().manual_seed(0)
    t2i = StableDiffusionPipeline.from_pretrained(out / "text_to_image")
    image = t2i("a red circle", height=64, width=64, num_inference_steps=2, generator=gen, output_type="np").images
    assert image.shape == (1, 64, 64, 3)
    edit = StableDiffusionInstructPix2PixPipeline.from_pretrained(out / "edit_image")
    source = Image.fromarray(np.full((64, 64, 3), 120, np.uint8))
    edited = edit("make it green", image=source, num_inference_steps=2, generator=gen, output_type="np").images
    assert edited.shape == (1, 64, 64, 3)
    for role in ("image_to_video", "connect_frames"):
        video = WanImageToVideoPipeline.from_pretrained(out / role)
        call = dict(prompt="a red circle moving left", height=64, width=64, num_frames=9, num_inference_steps=2)
        clip = video(image=source, generator=gen, output_type="np", **call).frames
        assert clip.shape == (1, 9, 64, 64, 3)
        joined = video(image=source, last_image=source, generator=gen, output_type="np", **call).frames
        assert joined.shape == (1, 9, 64, 64, 3)


@pytest.mark.slow
def test_training_conditions_match_the_wan_pipeline(trained: tuple[Path, dict]) -> None:
    """The condition latents, mask and prompt embeddings training feeds the transformer are the pipeline's own."""
    from diffusers import WanImageToVideoPipeline

    out, _ = trained
    pipe = WanImageToVideoPipeline.from_pretrained(out / "image_to_video")
    clips = toy_data.to_tensor(toy_data.clip_batch(np.random.default_rng(0), 2)["clips"], torch.device("cpu"))
    first, last = clips[:, :, 0], clips[:, :, -1]
    connect = torch.tensor([False, True])
    with torch.no_grad():
        ours = train_toy.wan_condition(pipe.vae, first, last, connect, 9)
        for i in range(2):
            _, theirs = pipe.prepare_latents(
                first[i : i + 1], 1, 16, 64, 64, 9, torch.float32, torch.device("cpu"),
                last_image=last[i : i + 1] if connect[i] else None,
            )  # fmt: skip
            torch.testing.assert_close(ours[i : i + 1], theirs, atol=1e-5, rtol=1e-4)
        prompts = ["a large red circle moving left on a blue background", ""]
        emb = train_toy.t5_embeds(train_toy.TokenCache(pipe.tokenizer), pipe.text_encoder, prompts, torch.device("cpu"))
        ref = pipe._get_t5_prompt_embeds(prompts, max_sequence_length=512, device=torch.device("cpu"))
    torch.testing.assert_close(emb, ref, atol=1e-5, rtol=1e-4)


@pytest.mark.unit
def test_batches_are_seeded_and_from_the_train_split() -> None:
    from openmora.toy.scenes import is_heldout

    rng = np.random.default_rng(5)
    a = toy_data.clip_batch(np.random.default_rng(5), 3)
    b = toy_data.clip_batch(np.random.default_rng(5), 3)
    assert (a["clips"] == b["clips"]).all() and a["prompts"] == b["prompts"]
    scenes = [toy_data._scene(rng) for _ in range(300)]
    assert not any(is_heldout(s) for s in scenes)
    triples = [toy_data.edit_example(rng) for _ in range(200)]
    assert not any(is_heldout(s) or is_heldout(e) for s, _, e in triples)
    assert any(e.style == "pixel-art" and s.style == "plain" for s, _, e in triples)


@pytest.mark.unit
def test_bad_flags_fail_with_a_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        train_toy.main(["--out", str(tmp_path), "--only", "vae,audio", "--device", "cpu"])
    assert "accepted are comma-separated names from vae, t2i, edit, video, video_decoder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_toy.main(["--out", str(tmp_path / "fresh"), "--only", "t2i", "--device", "cpu", "--steps", "1"])


@pytest.mark.unit
def test_per_model_budgets_and_batches(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = train_toy.Run(tmp_path, steps=None, minutes_per_model=4, batch=64, minutes={"vae_video": 2.5},
                        batches={"video": 24})  # fmt: skip
    assert run.budget("vae_video") == (None, 150.0) and run.budget("t2i") == (None, 240.0)
    assert [run.batch_for(m) for m in ("t2i", "vae_video", "video")] == [64, 16, 24]
    for flag, value in (
        ("--minutes", "t2i=-1"),
        ("--minutes", "unet=2"),
        ("--batches", "video=1.5"),
        ("--lr", "t2i=0"),
    ):
        with pytest.raises(SystemExit):
            train_toy.main(["--out", str(tmp_path), "--device", "cpu", flag, value])
        assert f"{flag} '{value}': accepted is MODEL=" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_starts_from_the_saved_weights_and_keeps_each_round(trained: tuple[Path, dict], tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "toy"
    shutil.copytree(trained[0], out, ignore=shutil.ignore_patterns("packed"))
    run = train_toy.Run(out, resume=True)
    unet = train_toy._start(run, lambda: toy_models.build_sd_unet(4), out / "text_to_image" / "unet")
    fresh = toy_models.build_sd_unet(4).state_dict()
    saved = unet.state_dict()
    assert all(
        torch.equal(saved[k], v)
        for k, v in type(unet).from_pretrained(out / "text_to_image" / "unet").state_dict().items()
    )
    assert not all(torch.equal(saved[k], v) for k, v in fresh.items())  # trained, not the seeded init
    args = [
        "--out",
        str(out),
        "--device",
        "cpu",
        "--only",
        "t2i",
        "--steps",
        "1",
        "--batch",
        "2",
        "--sample-steps",
        "1",
    ]
    summary = train_toy.main([*args, "--resume"])
    t2i = summary["models"]["t2i"]
    assert t2i["steps"] == 1 and [h["steps"] for h in t2i["history"]] == [2] and t2i["total_steps"] == 3


@pytest.mark.unit
def test_model_configs_fit_the_size_budget() -> None:
    counts = {
        "text_to_image": sum(map(toy_models.parameters, (toy_models.build_sd_vae(), toy_models.build_clip_text_encoder(), toy_models.build_sd_unet(4)))),
        "edit_image": sum(map(toy_models.parameters, (toy_models.build_sd_vae(), toy_models.build_clip_text_encoder(), toy_models.build_sd_unet(8)))),
        "video": sum(map(toy_models.parameters, (toy_models.build_wan_vae(), toy_models.build_umt5(), toy_models.build_wan_transformer()))),
    }  # fmt: skip
    total_mb = 4 * (counts["text_to_image"] + counts["edit_image"] + 2 * counts["video"]) / 1e6
    assert total_mb <= train_toy.MAX_TOTAL_MB


@pytest.mark.unit
def test_cached_clip_tokens_are_the_pipeline_tokens() -> None:
    tok = toy_models.tokenizer()
    prompts = ["a large red circle moving left on a blue background, " * 3, "", "make it green"]
    ref = tok(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    cache = train_toy.TokenCache(tok)
    assert torch.equal(train_toy._tokens(cache, prompts, torch.device("cpu")), ref)
    assert torch.equal(train_toy._tokens(cache, prompts, torch.device("cpu")), ref)  # from the cache


@pytest.mark.slow
def test_the_video_decoder_job_keeps_the_latents_and_changes_only_the_decoder(
    trained: tuple[Path, dict], tmp_path: Path
) -> None:
    import shutil

    from diffusers import AutoencoderKLWan

    out = tmp_path / "toy"
    shutil.copytree(trained[0], out, ignore=shutil.ignore_patterns("packed"))
    before = AutoencoderKLWan.from_pretrained(out / "image_to_video" / "vae")
    summary = train_toy.main(["--out", str(out), "--device", "cpu", "--only", "video_decoder", "--steps", "2",
                              "--batch", "4", "--log-every", "1"])  # fmt: skip
    assert summary["models"]["video_decoder"]["steps"] == 2
    for role in ("image_to_video", "connect_frames"):
        after = AutoencoderKLWan.from_pretrained(out / role / "vae")
        assert after.config.latents_mean == before.config.latents_mean
        old, new = before.state_dict(), after.state_dict()
        assert all(torch.equal(old[k], new[k]) for k in old if k.startswith(("encoder.", "quant_conv.")))
        assert not all(torch.equal(old[k], new[k]) for k in old if k.startswith("decoder."))


@pytest.mark.slow
def test_init_from_the_shipped_weights_continues_them_and_keeps_the_image_autoencoder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from diffusers import AutoencoderKL, AutoencoderKLWan, UNet2DConditionModel

    shipped = Path(__file__).resolve().parents[1] / "openmora" / "toy" / "weights"
    out = tmp_path / "toy"
    summary = train_toy.main(["--out", str(out), "--device", "cpu", "--init-from", str(shipped), "--only", "vae,t2i",
                              "--minutes", "vae_image=0", "--steps", "1", "--batch", "2", "--sample-steps", "1",
                              "--lr", "t2i=1e-9,vae_video=1e-9"])  # fmt: skip
    assert set(summary["models"]) == {"vae_video", "t2i"}  # the image autoencoder was not trained
    assert (out / "connect_frames" / "model_index.json").is_file()
    kept = AutoencoderKL.from_pretrained(out / "components" / "sd_vae").state_dict()
    assert all(torch.equal(v, AutoencoderKL.from_pretrained(shipped / "text_to_image" / "vae").state_dict()[k])
               for k, v in kept.items())  # fmt: skip
    # One step at a negligible rate: the t2i UNet and video VAE continue the shipped weights, not a fresh start.
    for cls, a, b in (
        (UNet2DConditionModel, out / "text_to_image" / "unet", shipped / "text_to_image" / "unet"),
        (AutoencoderKLWan, out / "components" / "wan_vae", shipped / "image_to_video" / "vae"),
    ):
        ours, theirs = cls.from_pretrained(a).state_dict(), cls.from_pretrained(b).state_dict()
        assert max(float((ours[k] - theirs[k]).abs().max()) for k in theirs) < 1e-4
    with pytest.raises(SystemExit):  # never over a folder that already holds weights
        train_toy.main(["--out", str(out), "--device", "cpu", "--init-from", str(shipped), "--steps", "1"])
    assert "already holds text_to_image" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="vae_image=0 keeps .*sd_vae, which is missing"):
        train_toy.main(["--out", str(tmp_path / "new"), "--device", "cpu", "--only", "vae", "--minutes",
                        "vae_image=0", "--steps", "1"])  # fmt: skip


@pytest.mark.unit
def test_min_snr_weights_count_the_nearly_clean_timesteps_less() -> None:
    alphas = train_toy._noise_scheduler().alphas_cumprod
    pred, noise = torch.ones(1, 4, 2, 2), torch.zeros(1, 4, 2, 2)
    noisy_end = float(train_toy.epsilon_loss(pred, noise, torch.tensor([999]), alphas))
    clean_end = float(train_toy.epsilon_loss(pred, noise, torch.tensor([0]), alphas))
    assert noisy_end == pytest.approx(1.0)  # SNR under gamma: plain MSE
    snr = float(alphas[0] / (1 - alphas[0]))
    assert clean_end == pytest.approx(train_toy.MIN_SNR_GAMMA / snr, rel=1e-5) and clean_end < 1e-2


@pytest.mark.unit
def test_resume_starts_a_model_whose_config_changed_from_the_seed_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    saved = tmp_path / "unet"
    toy_models.build_sd_unet(8).save_pretrained(saved)  # a model of another shape than the one asked for
    run = train_toy.Run(tmp_path, resume=True, device="cpu")
    with caplog.at_level("INFO", logger=train_toy.logger.name):
        unet = train_toy._start(run, lambda: toy_models.build_sd_unet(4), saved)
    assert unet.config.in_channels == 4
    fresh = toy_models.build_sd_unet(4).state_dict()
    assert all(torch.equal(v, fresh[k]) for k, v in unet.state_dict().items())
    assert "another shape (in_channels 8 -> 4)" in caplog.text
    same = train_toy._start(run, lambda: toy_models.build_sd_unet(8), saved)  # same shape: the saved weights
    assert all(torch.equal(v, type(same).from_pretrained(saved).state_dict()[k]) for k, v in same.state_dict().items())
    # A text encoder saved by another transformers version (the GPU machine's) has the same shape: it resumes.
    text_dir = tmp_path / "text_encoder"
    trained = toy_models.build_clip_text_encoder()
    with torch.no_grad():
        trained.get_parameter("final_layer_norm.weight").fill_(0.5)
    trained.save_pretrained(text_dir)
    config = json.loads((text_dir / "config.json").read_text())
    config.update(transformers_version="5.17.0", architectures=["CLIPTextModel"], dtype="float32")
    (text_dir / "config.json").write_text(json.dumps(config))
    caplog.clear()
    with caplog.at_level("INFO", logger=train_toy.logger.name):
        text = train_toy._start(run, toy_models.build_clip_text_encoder, text_dir)
    assert float(text.get_parameter("final_layer_norm.weight")[0]) == 0.5, caplog.text
    assert "resuming CLIPTextModel" in caplog.text


@pytest.mark.unit
def test_a_resumed_run_of_several_jobs_counts_each_round_once(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text(json.dumps({"models": {"t2i": {"steps": 5, "seconds": 2.0}}}))
    run = train_toy.Run(tmp_path, resume=True, device="cpu")
    run.earlier = json.loads((tmp_path / "summary.json").read_text())["models"]
    run.summary = {"models": {"t2i": {"steps": 3, "seconds": 1.0}}, "roles": {}}
    train_toy._write_summary(run)  # after the first job
    run.summary["models"]["video"] = {"steps": 4, "seconds": 1.5}  # a model new to this folder
    train_toy._write_summary(run)  # after the second job: the first job's model is not counted again
    train_toy._write_summary(run)  # and at the end
    models = json.loads((tmp_path / "summary.json").read_text())["models"]
    assert models["t2i"]["total_steps"] == 8 and len(models["t2i"]["history"]) == 1
    assert "history" not in models["video"] and models["video"]["steps"] == 4
