"""Pruning criteria compared fairly: accuracy-versus-compression curves on the same nets, data
and retraining budget, several seeds per point.

Each task is one (net, criterion, point, seed):
- unit criteria (apoz, mean_activation, l1, taylor, random) cut the same fraction (the
  point) of every trimmable channel group at once, physically, and every cut is verified
  against the silenced original (a cut that does not verify fails the run);
- magnitude (Han et al. 2015) prunes iteratively: over `rounds` rounds the threshold rises to
  point x the layer's weight std, with retraining between rounds;
- relief (NN Relief, the authors' rule) prunes for `rounds` rounds with alpha = the point (fc;
  conv 0.05 lower), retraining between rounds; neurons left without incoming weights and
  bias, or without outgoing connections, are then cut physically (verified).
Every task retrains with the same solver and the same total budget (iterative methods split
it over their rounds), with the pruned connections held at zero, keeping the checkpoint
with the best validation accuracy. Statistics come from a seeded random sample of training
images; the validation split (held out from the training images) chooses checkpoints; the
test set is used only for the numbers reported. The seed also shuffles the training data
(Caffe's Data layer reads in order) and seeds the random criterion.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pytrim.caffeio.lmdb import sample_lmdb
from pytrim.caffeio.proto import read_net, set_data_sources, write_text
from pytrim.core.errors import BadInput
from pytrim.criteria.scores import CONNECTION, UNIT
from pytrim.stats.evaluate import top1_on


@dataclass
class NetFiles:
    """One net of the comparison: its train_val, trained weights and fine-tuning solver."""

    name: str
    net: Path
    weights: Path
    baseline_solver: Path
    finetune_solver: Path


@dataclass
class Data:
    """The LMDBs: training images (sampled, shuffled), validation split, test set."""

    train: Path
    val: Path
    test: Path


@dataclass
class Settings:
    """The points of each criterion's curve, the seeds and the shared retraining budget."""

    unit_points: tuple[float, ...] = (0.25, 0.5, 0.75)  # fraction of each group's channels cut
    magnitude_points: tuple[float, ...] = (0.5, 1.0, 1.5)  # final threshold, x the weight std
    relief_points: tuple[float, ...] = (0.99, 0.95, 0.9)  # alpha of the fc layers (conv: 0.05 lower)
    seeds: tuple[int, ...] = (0, 1, 2)
    budget: int = 600  # solver iterations of retraining per task
    rounds: int = 3  # rounds of the iterative criteria (the budget is split over them)
    stats_images: int = 1000
    select_every: int = 200  # validation checks while retraining (the best checkpoint is kept)
    verify_tol: float = 1e-5  # a physical cut must verify within this (relative)

    def points(self, criterion: str) -> tuple[float, ...]:
        if criterion in UNIT:
            return self.unit_points
        return self.magnitude_points if criterion == "magnitude" else self.relief_points


@dataclass(frozen=True)
class Task:
    net: str
    criterion: str
    point: float
    seed: int

    @property
    def folder(self) -> str:
        return f"{self.net}/{self.criterion}/{self.point:g}/seed{self.seed}"


def all_tasks(nets: list[str], criteria: list[str], settings: Settings) -> list[Task]:
    unknown = [c for c in criteria if c not in UNIT + CONNECTION]
    if unknown:
        raise BadInput(f"unknown criteria: {', '.join(unknown)} (choose from {', '.join(UNIT + CONNECTION)})")
    return [
        Task(net, criterion, point, seed)
        for net in nets
        for criterion in criteria
        for point in settings.points(criterion)
        for seed in settings.seeds
    ]


@dataclass
class Work:
    """What one task works on: its folder, the net reading this seed's data (TRAIN: shuffled
    training images; TEST: the random sample statistics are measured on), the data."""

    task: Task
    files: NetFiles
    data: Data
    settings: Settings
    folder: Path
    net: Path
    sample: Path

    def evaluate(self, net: Path, weights: Path, source: Path) -> float:
        return top1_on(net, weights, source, self.folder / "eval.prototxt")


def seed_data(data: Data, settings: Settings, seed: int, out: Path) -> tuple[Path, Path]:
    """This seed's shuffled training LMDB and its random sample of training images (made
    once, shared by the seed's tasks)."""
    folder = out / "data" / f"seed{seed}"
    train, sample = folder / "train_lmdb", folder / "sample_lmdb"
    if not (train / "data.mdb").is_file():
        sample_lmdb(data.train, train, None, seed)
    if not (sample / "data.mdb").is_file():
        sample_lmdb(data.train, sample, settings.stats_images, seed + 1000)
    return train, sample


def prepare(task: Task, files: NetFiles, data: Data, settings: Settings, out: Path) -> Work:
    """A task's folder and its net reading this seed's shuffled training data and sample."""
    train, sample = seed_data(data, settings, task.seed, out)
    folder = out / task.folder
    folder.mkdir(parents=True, exist_ok=True)
    net = write_text(set_data_sources(read_net(files.net), train, sample), folder / "net.prototxt")
    return Work(task, files, data, settings, folder, net, sample)
