"""Progress bars for Client.wait: one tqdm bar per job (tqdm.auto picks a widget in notebooks and
text in terminals), percent of the job, its phase and state as the postfix."""
from typing import Dict, Optional, TextIO


class JobBars:
    """Bars for a set of jobs; update(job) moves a job's bar, close() ends them all. With
    enabled=False every call does nothing, so callers need no branches."""

    def __init__(self, enabled: bool, file: Optional[TextIO] = None):
        self.enabled = enabled
        self.file = file
        self.bars: Dict[str, object] = {}

    def update(self, job) -> None:
        if not self.enabled:
            return
        bar = self.bars.get(job.id)
        if bar is None:
            from tqdm.auto import tqdm
            bar = tqdm(total=100, desc=job.scheme, unit="%", position=len(self.bars), leave=True, file=self.file,
                       bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}] {postfix}")
            self.bars[job.id] = bar
        # The daemon's progress is per job in [0, 1]; a finished job shows its bar full.
        percent = 100.0 if job.ok else round(100.0 * job.progress, 1)
        bar.n = percent
        phase = job.phase.value if job.phase.value != "unspecified" else ""
        bar.set_postfix_str(f"{job.state.value} {phase}".strip(), refresh=False)
        bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()
