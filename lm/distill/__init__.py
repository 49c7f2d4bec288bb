"""`python -m lm.distill --corpus OUT/NAME --out RUN [options]`: augmentation plus distillation.

From a corpus snapshot and its augmented text (`python -m pipelines.augment`; run here when
missing), a small student that learns from a large teacher, which also judges which augmented
text is worth learning from:

1. Tokenizer: SentencePiece on the train split plus the augmented text (never dev or test);
   with `--teacher RUN`, that run's tokenizer (token-level distillation needs one vocabulary).
2. Teacher (`teachers`): `--teacher RUN` (one of our run folders), `--teacher-hf PATH` (a local
   Hugging Face causal LM, safetensors only, no remote code), or trained here with the `teacher`
   model preset: first on real train text only (this model is the judge), then continued on real
   plus kept augmented text (the teacher). The judge never trains on what it judges.
3. Judging (`judge`): the judge scores every variant and every real train sentence in bits per
   character, batched and jitted (`lm.scoring`); per augmenter, variants worse than the
   `--keep-quantile` Q quantile of the real sentences are dropped.
4. Students (`rounds`, trained by `lm.trainer`): loss alpha x CE + (1 - alpha) x T^2 x KL
   (`lm.losses`; `--kl reverse`, `--top-k K`, `--tail renorm|bucket`). Teacher outputs are
   computed in the student's jitted step, or read from a top-k cache (`teacher_cache`,
   `RUN/teacher-cache/`) when `--cache always`, or with `--cache auto` when the students would
   read more teacher tokens than the cache holds. `--noised-input`: noise variants become the
   student's input while their clean parents stay the targets. With `--teacher-hf`:
   sequence-level distillation (the teacher's samples continuing real prefixes join the
   augmented text as augmenter `teacher-sample`, judged like the rest).
5. Baselines with the same preset, steps and seed: `baseline` (real text, CE), `student_no_kd`
   (real plus kept augmented, CE), `student_no_aug` (real text, KD). `student` = KD + kept
   augmented text.
6. Rounds: from round 2 on, `pipelines.augment` runs again with a new seed (`variants`); mixture
   weights per augmenter come from the previous round (kept fraction x dev gain, `gain`); the
   loop stops when dev bits per character stops improving. The best round's student is `student`.
7. Report (`report`): RUN/report.json, RUN/report.md, RUN/dev_bpc.png, RUN/kept_fraction.png; the
   models table starts with the character n-gram anchor (`lm.ngram`, order chosen on dev).

Re-running the same command after an interruption continues: a model whose folder holds
`DONE.json` (written after its final checkpoint and evaluation) is not trained again, an
unfinished one resumes from its last checkpoint, and judged rounds are read back.
Exit codes: 0 ok, 1 failure, 2 usage.

Modules: `cli` (options, `main`), `config` (presets, settings fixed at creation), `workspace`
(the run folder; one model trained through `lm.trainer`), `variants` (augmented text; the only
module that runs `pipelines`), `teachers`, `judge`, `rounds` (the loop and the baselines),
`gain`, `teacher_cache`, `report`.
"""
from lm.distill.cli import main

__all__ = ["main"]
