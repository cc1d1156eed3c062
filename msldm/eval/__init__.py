"""Evaluation harness (numpy / scipy / matplotlib only; no torch: it judges the ONNX bundle).

Modules: `dsp` (STFT, mel, onset flux, spectral peaks), `reconstruction` (log-mel L1,
MR-STFT, SI-SDR), `density` (audibility, empty stems), `harmony` (harmonic fit,
`estimate_chords`), `rhythm` (onsets, rhythmic fit, `estimate_grid`), `fit` (context and
normalisation between the real and a mismatched reference), `embeddings` + `frechet`
(FAD on a pluggable embedding), `tables` (Table 2 layout), `data` (segments),
`generators` (the `Generator` protocol, fakes, bundle adapter), `pipeline` + `report`
(the run and its files), `cli` (`msldm eval`), `toy` (a numpy-synthesised test corpus).
"""
