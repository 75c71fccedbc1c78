"""Quantization-aware training (QAT) with tfmot, then full-int8 TFLite export and a float/PTQ/QAT comparison.

``python -m rtmdet_keras.qat configs/nano.yaml work_dirs/nano/best_coco_bbox_mAP.keras``
``--cfg-options data_root=... imgsz='(192,192)' max_epochs=5``

Steps (:func:`rtmdet_keras.qat.run.qat` runs them all):

1. **Twin and quantisation.** The trained Keras 3 network (``best_coco_bbox_mAP.keras``, or the EMA
   weights of an ``epoch_N.ckpt.npz``) is rebuilt as its tf_keras twin (tfmot 0.8.1 refuses Keras 3
   models), the weights are copied by layer name, every layer is annotated and
   ``tfmot.quantization.keras.quantize_apply`` applies tfmot's default 8-bit scheme with the configs
   of :mod:`rtmdet_keras.qat.configs` for what the scheme does not cover
   (:func:`~rtmdet_keras.qat.network.quantize_network`; :func:`~rtmdet_keras.qat.plan.quantization_plan`
   lists what happens to every layer and why).
2. **Range warm-up.** tfmot's activation ranges start at +-6 and follow a 0.999 moving average:
   :func:`~rtmdet_keras.qat.network.calibrate_ranges` first sets each to the mean of its per-batch
   ranges over the export's calibration images (``cfg.export.calib_images`` training images through the evaluation
   letterbox, the same images the PTQ export calibrates on), with BatchNorm in inference mode.
3. **Fine-tuning** through ``fit`` on a tf_keras model (:class:`~rtmdet_keras.qat.fit.QATDetector`)
   whose ``train_step`` uses the same pipeline (stage ``cfg.qat.stage``), assigner and losses as
   training (:func:`~rtmdet_keras.training.losses.detection_losses`), AdamW without decay on BatchNorm and
   biases, and :func:`~rtmdet_keras.training.schedule.qat_schedule` (power warm-up, cosine, constant
   tail). Callbacks freeze the activation ranges after ``cfg.qat.freeze_observer_ratio`` of the steps
   (``FreezeObservers``) and the BatchNorm statistics after ``cfg.qat.freeze_bn_ratio``
   (``FreezeBatchNorm``); the fake-quant model is evaluated on the validation split every epoch
   (:class:`~rtmdet_keras.training.callbacks.CocoEvalCallback`, TensorBoard), the best weights are
   kept, and a resumable checkpoint is written every epoch. No EMA: with lr 2e-5 over a few epochs
   RTMDet's EMA (weight of the new value close to 1 for the first ~2000 updates) would follow the
   weights anyway, and averaging quantiser ranges and frozen statistics has no meaning.
4. **Export** of the best fake-quant weights with :func:`rtmdet_keras.export.export_tflite` (full
   int8, same op checks, metadata JSON, op report and self-check against the fake-quant model), and
   evaluation of every model form with :func:`rtmdet_keras.evaluate.evaluate`.
5. A closing table: float Keras, int8 by post-training quantisation, the fake-quant Keras model and
   int8 by QAT, AP50:95 and AP50 on the validation split.

Files in ``work_dirs/<config>/qat/`` (or ``--work-dir``): ``config.yaml`` (resolved, with
``qat.epochs``), ``quantization_plan.txt``, ``epoch_N.ckpt.npz`` + ``last_checkpoint`` (whole
state: weights with quantiser ranges and BatchNorm statistics, optimiser, epoch; ``--resume``
continues from it), ``best_qat.weights.h5`` (+ ``.json``; tf_keras ``save_weights``: the QAT model
does not round-trip through ``.keras``, :func:`~rtmdet_keras.qat.network.load_qat_network` rebuilds it
and loads these),
``<config>_qat_int8.tflite`` (+ ``.json``, ``_ops.txt``), ``<config>_ptq_int8.tflite`` (the
baseline), ``tensorboard/`` and ``qat_summary.json``.

Epochs: ``cfg.qat.epochs`` (5 in the presets). On this command line ``max_epochs=N`` means the QAT
epochs (SSCMA's QAT configs call them so), ``qat.epochs=N`` works too; the training run's
``max_epochs`` is not used.

Modules: :mod:`~rtmdet_keras.qat.settings` (names, recipe checks, :class:`QATError`; no TensorFlow),
:mod:`~rtmdet_keras.qat.plan` (the per-layer plan), :mod:`~rtmdet_keras.qat.configs` (tfmot
QuantizeConfigs, quantizers, range controls), :mod:`~rtmdet_keras.qat.network` (the quantised
network), :mod:`~rtmdet_keras.qat.fit` (tf_keras detector, optimiser, callbacks, resumable state),
:mod:`~rtmdet_keras.qat.run` (the whole run); the command is :mod:`rtmdet_keras.commands.qat`.

tensorflow_model_optimization is imported only by this package's ``configs``, ``network``, ``fit`` and
``run`` modules (importing it sets ``TF_USE_LEGACY_KERAS=1``: ``tf.keras`` is tf_keras, not Keras 3,
from then on in the process); ``import rtmdet_keras.qat`` alone imports neither it nor TensorFlow.
"""
