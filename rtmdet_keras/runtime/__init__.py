"""Running a trained detector in any of its forms: Keras, training checkpoint, SavedModel, TFLite.

* :mod:`~rtmdet_keras.runtime.layout`: the output-layout contract of an exported model, shared with
  the exporter (:mod:`rtmdet_keras.export`);
* :mod:`~rtmdet_keras.runtime.tflite`: :class:`~rtmdet_keras.runtime.tflite.TFLiteDetector`, a
  ``.tflite`` run by LiteRT without TensorFlow;
* :mod:`~rtmdet_keras.runtime.loading`: which form a file is, and the Keras network of the Keras forms;
* :mod:`~rtmdet_keras.runtime.runners`: every form behind one interface (:func:`load_model_runner`);
* :mod:`~rtmdet_keras.runtime.evaluate` and :mod:`~rtmdet_keras.runtime.predict`: the libraries of
  ``rtmdet evaluate`` and ``rtmdet predict``.
"""
