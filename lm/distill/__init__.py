"""`python -m lm.distill --corpus OUT/NAME --out RUN [options]`: augmentation plus distillation.

From a corpus snapshot and its augmented text (`python -m pipelines.augment`; run here when
missing), a small student that learns from a large teacher, on real text plus the augmented
text that cross-fitted n-gram judges find worth learning from:

1. Tokenizer: SentencePiece on the train split's real text (never augmented, dev or test text),
   so every arm reads the same pieces; with `--teacher RUN`, that run's tokenizer (token-level
   distillation needs one vocabulary).
2. Judges (`judge`): two interpolated modified Kneser-Ney character n-grams (`lm.ngram`), each
   counted on one seeded half of the train records, its order chosen on real dev (never
   augmented, never a parent); no model is trained for judging. A variant is scored (bits per
   character of its text on its own) by the judge that never saw its parent, and kept when no
   worse than the `--keep-quantile` Q quantile of that judge's scores of a sample of the other
   half's real sentences (default 1.0: only variants worse than every sampled real sentence go;
   a tighter filter did not beat a random one in bench/augment_study.py). No judge ever scores
   text it counted: every call checks it by id against the judge's `data` record
   (`RUN/judge/NAME.json`).
3. Teacher (`teachers`): trained here with the `teacher` preset on real train text only, to
   convergence (dropout, early stopping on dev); or `--teacher RUN` (one of our run folders) or
   `--teacher-hf PATH` (a local Hugging Face causal LM, safetensors only, no remote code). What
   it trained on is recorded (`data` in run.json and DONE.json). A token-level modified
   Kneser-Ney n-gram of the real train text is mixed into its soft targets (`ngram_teacher`:
   order and weight chosen on dev; the report's `teacher_ngram` row; `--no-teacher-ngram`).
4. Students (`rounds`, trained by `lm.trainer`): loss alpha x CE + (1 - alpha) x T^2 x KL
   (`lm.losses`; `--kl reverse`, `--top-k K`, `--tail renorm|bucket`). Teacher outputs are
   computed in the student's jitted step, or read from a top-k cache (`teacher_cache`,
   `RUN/teacher-cache/`) when `--cache always`, or with `--cache auto` when the students would
   read more teacher tokens than the cache holds. Noise variants are the student's input while
   their clean parents stay the targets (`--no-noised-input` makes them targets too). The
   teacher's samples continuing real train prefixes join the augmented text as augmenter
   `teacher-sample`, judged like the rest: our teacher's when the spec's
   `[augment.teacher_sample]` asks (how many, temperature, top-p), an augmenter for any language; with
   `--teacher-hf`, sequence-level distillation from that model. Before the student trains, each
   augmenter's dev gain is measured on the teacher and one whose gain is not positive is dropped
   (the report says which and why).
5. Arms, `--seeds N` paired seeds each (seed pair i: the same initial parameters and order of
   real text for every arm): `student` and `baseline`, and those that `--ablations`,
   `--study-arms` and `--compare-tail` add; `arms.ARMS` says what each trains on and with which
   loss (`--help` lists it). Every model stops once dev stops improving (`patience`), and its
   best checkpoint is the model.
6. Rounds: from round 2 on, `pipelines.augment` runs again with a new seed (`variants`); mixture
   weights per augmenter come from the previous round (kept fraction x dev gain, `gain`); the
   loop stops when dev bits per character stops improving. The arms train after the best round
   is fixed.
7. Report (`report`, `paired`): RUN/report.json, RUN/report.md, RUN/dev_bpc.png,
   RUN/kept_fraction.png; the models table starts with the character n-gram anchor (`lm.ngram`,
   order chosen on dev), arms are means over seeds, and each arm's paired difference from the
   student comes with its 95% t-interval; a few samples from the student close it.

Re-running the same command after an interruption continues: a model whose folder holds
`DONE.json` (written after its final checkpoint and evaluation) is not trained again, an
unfinished one resumes from its last checkpoint, and judged rounds are read back.
Exit codes: 0 ok, 1 failure, 2 usage.

Modules: `cli` (the parser, built from `config`; `main`), `config` (`Settings`: one field per
option, the presets' defaults, the settings fixed at creation), `workspace`
(the run folder; one model trained through `lm.trainer`), `variants` (augmented text; the only
module that runs `pipelines`), `teachers`, `judge`, `rounds` (the loop and the arms), `gain`,
`teacher_cache`, `ngram_teacher` (the n-gram mixed into the teacher), `paired` (seed statistics), `report`, `arms` (the table of arms: what each trains on).
"""
from lm.distill.cli import main

__all__ = ["main"]
