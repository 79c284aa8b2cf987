"""Export and replay of test episodes, so methods and frameworks compare on the same tasks.

Format: {"split": "test", "way": 5, "shot": 1, "query": 15,
         "episodes": [{"classes": [label, ...], "support": [[file, ...] per class],
                       "query": [[file, ...] per class]}, ...]}
with labels as class names and files as the dataset's CSV file names (`file_names`).
"""
import json
from typing import Dict, List, Sequence, Tuple

from utils.errors import UserError


def episodes_to_json(episodes: Sequence[List[int]], dataset, way: int, shot: int, query: int,
                     split: str = "test") -> Dict:
    """Describe index episodes by class names and file names."""
    out = []
    for episode in episodes:
        support, queries = episode[:way * shot], episode[way * shot:]
        out.append({
            "classes": [dataset.label_names[dataset.labels[support[c * shot]]] for c in range(way)],
            "support": [[dataset.file_names[i] for i in support[c * shot:(c + 1) * shot]] for c in range(way)],
            "query": [[dataset.file_names[i] for i in queries[c * query:(c + 1) * query]] for c in range(way)],
        })
    return {"split": split, "way": way, "shot": shot, "query": query, "episodes": out}


def save_episodes(path: str, episodes: Sequence[List[int]], dataset, way: int, shot: int, query: int,
                  split: str = "test") -> None:
    with open(path, "w") as f:
        json.dump(episodes_to_json(episodes, dataset, way, shot, query, split), f)


def load_episodes(path: str, dataset) -> Tuple[List[List[int]], int, int, int]:
    """Read an episodes file back into index episodes of `dataset`: (episodes, way, shot, query)."""
    def bad(why: str) -> UserError:
        return UserError(f"--episodes_file {path}: {why}; write it with test.py --save_episodes")

    try:
        with open(path) as f:
            spec = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise bad(f"not readable JSON ({type(err).__name__})") from None
    if not isinstance(spec, dict) or not all(k in spec for k in ("way", "shot", "query", "episodes")):
        raise bad("needs the keys way, shot, query and episodes")
    way, shot, query = spec["way"], spec["shot"], spec["query"]
    index = {name: i for i, name in enumerate(dataset.file_names)}
    episodes = []
    for n, ep in enumerate(spec["episodes"]):
        try:
            groups = [(ep["support"][c], shot) for c in range(way)] + [(ep["query"][c], query) for c in range(way)]
        except (KeyError, IndexError, TypeError):
            raise bad(f"episode {n} lacks {way} support and query lists") from None
        indices = []
        for files, count in groups:
            if not isinstance(files, list) or len(files) != count:
                raise bad(f"episode {n} has a list of {len(files) if isinstance(files, list) else '?'} "
                          f"files where {count} are expected")
            for name in files:
                if name not in index:
                    raise bad(f"episode {n} names {name!r}, which is not in {dataset.path}")
                indices.append(index[name])
        episodes.append(indices)
    if not episodes:
        raise bad("it holds no episodes")
    return episodes, way, shot, query
