"""The uint8 image cache and the SPEC 6 transforms it must reproduce.

The claim under test: reading the cache changes nothing for training. The cache stores the output
of ``Resize((224, 224))``; the cached eval transform must equal ``Resize + ToTensor + Normalize``
on the JPEG, and the cached train transform must equal torchvision's padded ``RandomCrop`` and
``RandomHorizontalFlip`` (given the offsets, and under the same seed).
"""

from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ranksim.data.age import image_cache as ic
from ranksim.data.age import transforms as tr
from ranksim.data.age.prepare import build_cache_main
from ranksim.errors import UserError


def random_image(seed: int, size=(61, 47)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture
def root(tmp_path):
    """Nine small JPEGs of assorted sizes (one grey-scale) and their split table."""
    (tmp_path / "AgeDB").mkdir()
    paths = []
    for k in range(9):
        img = random_image(k, size=(40 + 7 * k, 90 - 5 * k))
        if k == 4:
            img = img.convert("L")  # load_image must give RGB anyway
        rel = f"AgeDB/{k}_Name_{20 + k}_m.jpg"
        img.save(tmp_path / rel, quality=90)
        paths.append(rel)
    df = pd.DataFrame({"age": [20 + k for k in range(9)], "path": paths,
                       "split": ["train"] * 6 + ["val", "test", "test"]})
    df.to_csv(tmp_path / "agedb.csv", index=False)
    return tmp_path, df


def resized_u8(path) -> torch.Tensor:
    return torch.from_numpy(np.array(tr.resize_to_array(tr.load_image(path)))).permute(2, 0, 1)


# ------------------------------------------------------------------------------------------
# Plain path


def test_load_image_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(UserError, match=f"image {tmp_path / 'nope.jpg'} does not exist"):
        tr.load_image(tmp_path / "nope.jpg")
    (tmp_path / "junk.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(UserError, match="junk.jpg is damaged"):
        tr.load_image(tmp_path / "junk.jpg")
    buf = io.BytesIO()
    random_image(0, (200, 200)).save(buf, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[:1500])  # header fine, pixels cut short
    with pytest.raises(UserError, match="cut.jpg is damaged"):
        tr.load_image(tmp_path / "cut.jpg")


def test_plain_transforms_are_spec6():
    train = [type(t).__name__ for t in tr.plain_train_transform().transforms]
    assert train == ["Resize", "RandomCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    crop = tr.plain_train_transform().transforms[1]
    assert crop.size == (224, 224) and crop.padding == 16 and crop.fill == 0
    assert [type(t).__name__ for t in tr.plain_eval_transform().transforms] == ["Resize", "ToTensor", "Normalize"]
    assert tr.plain_eval_transform().transforms[0].size == (224, 224)


# ------------------------------------------------------------------------------------------
# Cached transforms against torchvision


def test_cached_eval_equals_the_plain_path():
    img = random_image(1, (300, 250))
    plain = tr.plain_eval_transform()(img)
    cached = tr.cached_eval_transform(torch.from_numpy(np.array(tr.resize_to_array(img))).permute(2, 0, 1))
    assert cached.dtype == torch.float32 and cached.shape == (3, 224, 224)
    # Same float operations in the same order: equal, and certainly within uint8 rounding (2/255).
    torch.testing.assert_close(cached, plain, rtol=0, atol=1e-6)


@pytest.mark.parametrize("top, left, flip", [(0, 0, False), (32, 32, True), (16, 16, False), (5, 30, True),
                                             (31, 0, False)])
def test_crop_flip_equals_torchvision_on_the_resized_image(top, left, flip):
    resized = tr._resize(224)(random_image(2, (120, 90)))
    # torchvision on PIL: pad with zeros, crop the window, flip.
    expected = TF.crop(TF.pad(resized, 16, fill=0), top, left, 224, 224)
    if flip:
        expected = TF.hflip(expected)
    expected = torch.from_numpy(np.array(expected)).permute(2, 0, 1)
    u8 = torch.from_numpy(np.array(resized)).permute(2, 0, 1)
    assert torch.equal(tr.crop_flip_u8(u8, top, left, flip, padding=16), expected)


def test_cached_train_transform_matches_torchvision_under_the_same_seed():
    img = random_image(3, (210, 180))
    u8 = torch.from_numpy(np.array(tr.resize_to_array(img))).permute(2, 0, 1)
    plain = tr.plain_train_transform()
    flips = set()
    for seed in range(12):
        torch.manual_seed(seed)
        expected = plain(img)
        torch.manual_seed(seed)
        got = tr.cached_train_transform(u8)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
        torch.manual_seed(seed)
        offsets = (torch.randint(0, 33, (1,)).item(), torch.randint(0, 33, (1,)).item())
        flips.add((offsets != (16, 16), bool(torch.rand(1) < 0.5)))
    assert {flip for _, flip in flips} == {False, True}  # both branches were compared


def test_cached_transforms_check_their_input():
    with pytest.raises(ValueError, match=r"\(3, H, W\).*\(224, 224, 3\)"):
        tr.cached_eval_transform(torch.zeros(224, 224, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="torch.float32"):
        tr.cached_train_transform(torch.zeros(3, 224, 224))


# ------------------------------------------------------------------------------------------
# Cache files


@pytest.mark.parametrize("workers", [1, 2])
def test_cache_round_trip(root, workers):
    tmp_path, df = root
    path = ic.build_cache(tmp_path, df, workers=workers, split_file=tmp_path / "agedb.csv")
    assert path == ic.default_cache_path(tmp_path) and path.is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == ["images_u8.json", "images_u8.npy"]  # no temp left
    meta = json.loads(ic.sidecar_path(path).read_text())
    assert meta["paths"] == df["path"].tolist() and meta["size"] == 224 and len(meta["split_file"]["sha256"]) == 64
    cache = ic.ImageCache.open(path, df)
    assert len(cache) == len(df) and cache.size == 224
    for rel in df["path"]:
        got = cache.get(cache.index_of(rel))
        assert got.dtype == torch.uint8 and got.shape == (3, 224, 224)
        assert torch.equal(got, resized_u8(tmp_path / rel))


def test_cache_command_detects_the_split_file_and_checks_it(root, capsys):
    tmp_path, df = root
    assert build_cache_main(["--root", str(tmp_path), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "9 of 224x224 px (split file agedb.csv)" in out
    (tmp_path / "imdb_wiki.csv").write_text("age,path,split\n")
    with pytest.raises(UserError, match="several split files"):
        build_cache_main(["--root", str(tmp_path)])


def test_stale_or_missing_cache_is_refused(root):
    tmp_path, df = root
    path = ic.default_cache_path(tmp_path)
    with pytest.raises(UserError, match="no complete image cache .* ranksim.data.prepare cache --root"):
        ic.ImageCache.open(path, df)
    ic.build_cache(tmp_path, df.iloc[:5], workers=1)
    ic.ImageCache.open(path, df.iloc[:3])                        # a subset of the cached paths is fine
    with pytest.raises(UserError, match=rf"stale \(4 of the split file's 9 images .*rebuild it with "
                                        rf"python -m ranksim.data.prepare cache --root {tmp_path}"):
        ic.ImageCache.open(path, df)
    # The array and the sidecar must agree, or the cache is not used.
    meta = json.loads(ic.sidecar_path(path).read_text())
    meta["paths"].append("AgeDB/extra.jpg")
    ic.sidecar_path(path).write_text(json.dumps(meta))
    with pytest.raises(UserError, match="does not match 6 images"):
        ic.ImageCache.open(path, df.iloc[:3])


def test_interrupted_build_leaves_no_cache_that_opens(root):
    tmp_path, df = root
    ic.build_cache(tmp_path, df, workers=1)                      # a complete cache...
    (tmp_path / df["path"][6]).write_bytes(b"\xff\xd8 broken")   # ...then an image breaks
    with pytest.raises(UserError, match=f"{df['path'][6]} is damaged"):
        ic.build_cache(tmp_path, df, workers=2)
    path = ic.default_cache_path(tmp_path)
    assert not path.with_name("images_u8.tmp.npy").exists()
    with pytest.raises(UserError, match="no complete image cache"):
        ic.ImageCache.open(path, df)


class CachedSet(Dataset):
    def __init__(self, cache):
        self.cache = cache

    def __len__(self):
        return len(self.cache)

    def __getitem__(self, i):
        return tr.cached_eval_transform(self.cache.get(i))


def test_cache_pickles_and_serves_dataloader_workers(root):
    tmp_path, df = root
    cache = ic.ImageCache.open(ic.build_cache(tmp_path, df, workers=1), df)
    first = cache.get(0)                                          # map it in this process first
    clone = pickle.loads(pickle.dumps(cache))
    assert clone._array is None and torch.equal(clone.get(0), first)
    batches = list(DataLoader(CachedSet(cache), batch_size=3, num_workers=2))
    expected = torch.stack([tr.cached_eval_transform(cache.get(i)) for i in range(len(cache))])
    assert torch.equal(torch.cat(batches), expected)
