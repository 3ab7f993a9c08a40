"""Scorers for what comes home from a run: SQuAD EM/F1, math accuracy, prediction files.

Pure functions over text; nothing here needs mindspore or mindformers (jieba only).
"""
