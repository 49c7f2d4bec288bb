"""Text augmenters and the filters their output passes through: pure text -> text, no Beam, no JAX.

Every augmenter is a class behind one interface (`augment.base.Augmenter`); the registry builds
them from a spec's `[augment]` table.
"""
