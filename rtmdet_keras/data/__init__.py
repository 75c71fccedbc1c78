"""Data: readers (COCO JSON, YOLO txt) -> :class:`DetectionDataset` records, image loading, checks."""

from rtmdet_keras.data.coco import read_coco
from rtmdet_keras.data.images import ImageReadError, load_image
from rtmdet_keras.data.records import DatasetError, DatasetWarning, DetectionDataset, ImageRecord
from rtmdet_keras.data.split import detect_format, load_split
from rtmdet_keras.data.yolo import read_yolo
