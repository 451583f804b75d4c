"""Data for verl: OneThinker / OpenVLThinker JSON records -> verl's multimodal RL parquet.

``g2rpo-data convert`` (:mod:`g2rpo_verl.data.data_cli`) is the command; :mod:`.records` turns one
record into one verl row and says exactly what is wrong with a bad one; :mod:`.writer`
splits train / validation per task and writes every file atomically.
"""

from g2rpo_verl.data.onethinker import ANSWER_FORMS, ConvertOptions, RecordError, convert_record, format_prompt

__all__ = ["ANSWER_FORMS", "ConvertOptions", "RecordError", "convert_record", "format_prompt"]
