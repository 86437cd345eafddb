"""hyperadapt:finetune -- fine-tune SpectralGPT with an adapter on training polygons, then classify."""
from __future__ import annotations

import os

from qgis.core import (QgsProcessing, QgsProcessingException,
                       QgsProcessingOutputNumber, QgsProcessingOutputString,
                       QgsProcessingParameterBoolean, QgsProcessingParameterDefinition,
                       QgsProcessingParameterEnum, QgsProcessingParameterField,
                       QgsProcessingParameterFile, QgsProcessingParameterFileDestination,
                       QgsProcessingParameterNumber, QgsProcessingParameterRasterDestination,
                       QgsProcessingParameterRasterLayer, QgsProcessingParameterString,
                       QgsProcessingParameterVectorLayer)

from ...models import options
from ..styling import class_style_from_layer
from ..layers import placement_problem
from .common import (ADAPTER_FILE_FILTER, WEIGHTS_FILE_FILTER, EngineFeedback,
                     HyperAdaptAlgorithm, check_geotiff_destination, destination_or_none,
                     file_destination_or_none, format_number, format_ratio, raster_file,
                     require_engine, run_engine_job, style_when_loaded, vector_file)

# Enum parameters pass positions: the engine's choices in models.options' order.
METHODS = list(options.METHODS)
BAND_ADAPTATIONS = list(options.BAND_ADAPTATIONS)
CLASSIFY_MODES = list(options.CLASSIFY_MODES)
TRAINING_MODES = list(options.TRAINING_MODES)
CLASS_WEIGHTINGS = list(options.CLASS_WEIGHTINGS)
PRESETS = list(options.PRESETS)
BACKBONES = list(options.BACKBONES)


class FineTuneAlgorithm(HyperAdaptAlgorithm):
    INPUT = "INPUT"
    TRAINING = "TRAINING"
    CLASS_FIELD = "CLASS_FIELD"
    METHOD = "METHOD"
    STEPS = "STEPS"
    EPOCHS = "EPOCHS"
    MIN_PASSES = "MIN_PASSES"
    LEARNING_RATE = "LEARNING_RATE"
    LAMBDA = "LAMBDA"
    WINDOW_SIZE = "WINDOW_SIZE"
    INPUT_SIZE = "INPUT_SIZE"
    BAND_ADAPTATION = "BAND_ADAPTATION"
    TARGETS = "TARGETS"
    RANK = "RANK"
    BATCH_SIZE = "BATCH_SIZE"
    VAL_FRACTION = "VAL_FRACTION"
    MIN_VALIDATION_PIXELS = "MIN_VALIDATION_PIXELS"
    REFIT = "REFIT"
    SEED = "SEED"
    DEVICE = "DEVICE"
    PRESET = "PRESET"
    BACKBONE = "BACKBONE"
    WEIGHTS = "WEIGHTS"
    CONTINUE_FROM = "CONTINUE_FROM"
    RANDOM_START = "RANDOM_START"
    SENSOR = "SENSOR"
    PIXEL_DIM = "PIXEL_DIM"
    CONTEXT_DROPOUT = "CONTEXT_DROPOUT"
    SPECTRAL_WEIGHT = "SPECTRAL_WEIGHT"
    SPECTRAL_CONTEXT = "SPECTRAL_CONTEXT"
    SEGMENT_SIZE = "SEGMENT_SIZE"
    VALIDATE_VOTE = "VALIDATE_VOTE"
    SPECTRAL_WHITENING = "SPECTRAL_WHITENING"
    CLASSIFY_MODE = "CLASSIFY_MODE"
    TRAINING_MODE = "TRAINING_MODE"
    TILE_STEP = "TILE_STEP"
    CLASS_WEIGHTING = "CLASS_WEIGHTING"
    MAJORITY_SIZE = "MAJORITY_SIZE"
    SIEVE_PIXELS = "SIEVE_PIXELS"
    SELF_TRAINING = "SELF_TRAINING"
    CROSS_VALIDATION = "CROSS_VALIDATION"
    OUTPUT_ADAPTER = "OUTPUT_ADAPTER"
    OUTPUT_CLASSIFICATION = "OUTPUT_CLASSIFICATION"
    OUTPUT_CONFIDENCE = "OUTPUT_CONFIDENCE"
    OUTPUT_REPORT = "OUTPUT_REPORT"
    OVERALL_ACCURACY = "OVERALL_ACCURACY"
    AVERAGE_ACCURACY = "AVERAGE_ACCURACY"
    KAPPA = "KAPPA"
    BACKBONE_USED = "BACKBONE_USED"
    CV_OVERALL_ACCURACY = "CV_OVERALL_ACCURACY"

    def name(self):
        return "finetune"

    def displayName(self):  # noqa: N802 (QGIS's name)
        return self.tr("Fine-tune SpectralGPT and classify")

    def shortHelpString(self):  # noqa: N802 (QGIS's name)
        return self.tr(
            "Fine-tunes SpectralGPT with a small adapter (KronA+ by default) on training polygons or "
            "points drawn over a hyperspectral raster, saves the adapter file, and classifies the "
            "raster with it. The class field may hold names or numbers; a categorized style on it "
            "gives the classes their colours, and its labels name numbered classes (3 = Corn). "
            "Without official weights or a pretrained backbone file, tick 'Random start' to train "
            "from random weights (every output then says so). "
            "Validation holds out whole polygons, and only from classes with more than two "
            "polygons and enough pixels, so a handful of polygons per class all train. "
            "After validating, a refit (Advanced) trains again on every pixel, held-out "
            "polygons included, for the epochs validation chose; the validation figures stay "
            "those of the first model. "
            "Training runs the optimizer steps, and more where a larger training set needs "
            "them to pass over its pixels the least number of epochs (Epochs, if set, replaces "
            "both). Each class counts the same in training, however many pixels its polygons "
            "hold (Class weighting: None counts every pixel the same). "
            "The head sees the centre pixel's own inputs "
            "beside the window's pooled tokens. The scene is classified in tile mode (a window "
            "every few pixels, each pixel's features mixed from the windows around it: far "
            "faster than a window per pixel at about the same accuracy). Each pixel's class "
            "probabilities are mixed with those of a kernel classifier on every band the band "
            "adaptation reads (Spectral classifier weight; 0 = the network alone), which sees "
            "the pixel's own spectrum, the mean spectrum of the square around it (Spectral "
            "classifier neighbourhood), or both, whichever classifies the training polygons "
            "best when each is left out in turn; each pixel then takes the mean class "
            "probabilities of its superpixel "
            "(segment vote; 0 turns it off), unless polygons were held out for validation and "
            "they are classified clearly better without it. "
            "The defaults are those the accuracy bench found best (bench/results/accuracy.md).")

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS's name)
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Hyperspectral raster")))
        self.addParameter(QgsProcessingParameterVectorLayer(
            self.TRAINING, self.tr("Training polygons or points"),
            [QgsProcessing.TypeVectorPolygon, QgsProcessing.TypeVectorPoint]))
        self.addParameter(QgsProcessingParameterField(
            self.CLASS_FIELD, self.tr("Class field"), parentLayerParameterName=self.TRAINING))
        self.addParameter(QgsProcessingParameterEnum(
            self.METHOD, self.tr("Fine-tuning method"), options=list(options.METHODS.values()),
            defaultValue=METHODS.index(options.DEFAULT_METHOD)))
        self.addParameter(QgsProcessingParameterNumber(
            self.STEPS, self.tr("Optimizer steps"), QgsProcessingParameterNumber.Integer,
            options.DEFAULT_STEPS, minValue=1, maxValue=options.MAX_STEPS))
        self.addParameter(QgsProcessingParameterNumber(
            self.LEARNING_RATE, self.tr("Learning rate"), QgsProcessingParameterNumber.Double,
            options.DEFAULT_LEARNING_RATE, minValue=1e-8, maxValue=1.0))
        self.addParameter(QgsProcessingParameterNumber(
            self.LAMBDA, self.tr("Learning-rate ratio lambda (KronA+, LoRA+)"),
            QgsProcessingParameterNumber.Double, options.DEFAULT_LR_RATIO,
            minValue=options.MIN_LR_RATIO))

        advanced = [
            QgsProcessingParameterNumber(self.EPOCHS,
                                         self.tr("Epochs instead of steps (0 = from the steps)"),
                                         QgsProcessingParameterNumber.Integer, 0, minValue=0,
                                         maxValue=options.MAX_STEPS),
            QgsProcessingParameterNumber(
                self.MIN_PASSES,
                self.tr("Epochs at least, within {} steps (more steps for many pixels; 0 = the "
                        "steps alone)").format(options.MAX_SCHEDULED_STEPS),
                QgsProcessingParameterNumber.Integer, options.DEFAULT_MIN_PASSES, minValue=0,
                maxValue=options.MAX_STEPS),
            QgsProcessingParameterNumber(self.WINDOW_SIZE, self.tr("Window size (pixels, odd)"),
                                         QgsProcessingParameterNumber.Integer,
                                         options.DEFAULT_WINDOW_SIZE, minValue=1,
                                         maxValue=options.MAX_WINDOW_SIZE),
            QgsProcessingParameterNumber(self.INPUT_SIZE,
                                         self.tr("Model input size (pixels, multiple of 8)"),
                                         QgsProcessingParameterNumber.Integer,
                                         options.DEFAULT_INPUT_SIZE, minValue=options.PATCH_SIZE,
                                         maxValue=options.MAX_INPUT_SIZE),
            QgsProcessingParameterEnum(self.BAND_ADAPTATION, self.tr("Band adaptation"),
                                       options=list(options.BAND_ADAPTATIONS.values()),
                                       defaultValue=BAND_ADAPTATIONS.index(
                                           options.DEFAULT_BAND_ADAPTATION)),
            QgsProcessingParameterEnum(self.TARGETS, self.tr("Adapted layers"),
                                       options=list(options.TARGETS), allowMultiple=True,
                                       defaultValue=[options.TARGETS.index(t)
                                                     for t in options.DEFAULT_TARGETS]),
            QgsProcessingParameterNumber(self.RANK, self.tr("Rank (LoRA, LoKr)"),
                                         QgsProcessingParameterNumber.Integer,
                                         options.DEFAULT_RANK, minValue=1),
            QgsProcessingParameterNumber(self.BATCH_SIZE, self.tr("Batch size"),
                                         QgsProcessingParameterNumber.Integer,
                                         options.DEFAULT_BATCH_SIZE, minValue=1,
                                         maxValue=options.MAX_BATCH_SIZE),
            QgsProcessingParameterNumber(self.VAL_FRACTION,
                                         self.tr("Share of polygons kept for validation"),
                                         QgsProcessingParameterNumber.Double,
                                         options.DEFAULT_VAL_FRACTION, minValue=0.0,
                                         maxValue=0.9),
            QgsProcessingParameterNumber(self.MIN_VALIDATION_PIXELS,
                                         self.tr("Least pixels of a class to hold some out for "
                                                 "validation"),
                                         QgsProcessingParameterNumber.Integer,
                                         options.MIN_VALIDATION_CLASS_PIXELS, minValue=0),
            QgsProcessingParameterBoolean(self.REFIT,
                                          self.tr("Refit: after validating, train again on "
                                                  "every pixel for the epochs validation chose"),
                                          defaultValue=options.DEFAULT_REFIT),
            QgsProcessingParameterNumber(self.PIXEL_DIM,
                                         self.tr("Centre-pixel embedding width in the head "
                                                 "(0 = pooled tokens only)"),
                                         QgsProcessingParameterNumber.Integer,
                                         options.DEFAULT_PIXEL_DIM, minValue=0, maxValue=4096),
            QgsProcessingParameterNumber(self.CONTEXT_DROPOUT,
                                         self.tr("Context dropout (share of training windows "
                                                 "whose pooled tokens the head does not see)"),
                                         QgsProcessingParameterNumber.Double,
                                         options.DEFAULT_CONTEXT_DROPOUT, minValue=0.0,
                                         maxValue=0.95),
            QgsProcessingParameterEnum(self.CLASS_WEIGHTING, self.tr("Class weighting in training"),
                                       options=list(options.CLASS_WEIGHTINGS.values()),
                                       defaultValue=CLASS_WEIGHTINGS.index(
                                           options.DEFAULT_CLASS_WEIGHTING)),
            QgsProcessingParameterNumber(self.SPECTRAL_WEIGHT,
                                         self.tr("Spectral classifier weight (share of a kernel "
                                                 "classifier on each pixel's spectrum in the "
                                                 "map; 0 = the network alone)"),
                                         QgsProcessingParameterNumber.Double,
                                         options.DEFAULT_SPECTRAL_WEIGHT, minValue=0.0,
                                         maxValue=1.0),
            QgsProcessingParameterNumber(self.SPECTRAL_CONTEXT,
                                         self.tr("Spectral classifier neighbourhood (odd side in "
                                                 "pixels of the square whose mean spectrum it may "
                                                 "see; 0 = the pixel's spectrum alone)"),
                                         QgsProcessingParameterNumber.Integer,
                                         options.DEFAULT_SPECTRAL_CONTEXT, minValue=0,
                                         maxValue=options.MAX_SPECTRAL_CONTEXT),
            QgsProcessingParameterBoolean(self.SPECTRAL_WHITENING,
                                          self.tr("Spectral classifier compares spectra in units "
                                                  "of the scene's noise where neighbouring pixels "
                                                  "measure it (off: each band standardised)"),
                                          defaultValue=options.DEFAULT_SPECTRAL_WHITENING),
            QgsProcessingParameterEnum(self.CLASSIFY_MODE, self.tr("Classifying the scene"),
                                       options=list(options.CLASSIFY_MODES.values()),
                                       defaultValue=CLASSIFY_MODES.index(
                                           options.DEFAULT_CLASSIFY_MODE)),
            QgsProcessingParameterEnum(self.TRAINING_MODE, self.tr("Training windows"),
                                       options=list(options.TRAINING_MODES.values()),
                                       defaultValue=TRAINING_MODES.index(
                                           options.DEFAULT_TRAINING_MODE)),
            QgsProcessingParameterNumber(self.TILE_STEP,
                                         self.tr("Tile step in pixels (0 = {} of the "
                                                 "window)").format(
                                             f"{options.TILE_STEP_SHARE:.0%}"),
                                         QgsProcessingParameterNumber.Integer,
                                         options.DEFAULT_TILE_STEP, minValue=0,
                                         maxValue=options.MAX_WINDOW_SIZE),
            QgsProcessingParameterNumber(self.SEGMENT_SIZE,
                                         self.tr("Segment vote: superpixel size in pixels "
                                                 "(0 = off)"),
                                         QgsProcessingParameterNumber.Integer,
                                         options.DEFAULT_SEGMENT_SIZE, minValue=0,
                                         maxValue=options.MAX_SEGMENT_SIZE),
            QgsProcessingParameterBoolean(self.VALIDATE_VOTE,
                                          self.tr("Check the segment vote on the held-out "
                                                  "polygons (left out where they are classified "
                                                  "clearly better without it)"),
                                          defaultValue=options.DEFAULT_VALIDATE_VOTE),
            QgsProcessingParameterNumber(self.MAJORITY_SIZE,
                                         self.tr("Majority filter after the vote: odd window "
                                                 "side in pixels (0 = off)"),
                                         QgsProcessingParameterNumber.Integer,
                                         options.DEFAULT_MAJORITY_SIZE, minValue=0,
                                         maxValue=options.MAX_MAJORITY_SIZE),
            QgsProcessingParameterNumber(self.SIEVE_PIXELS,
                                         self.tr("Sieve last: smallest patch kept, in pixels "
                                                 "(0 = off)"),
                                         QgsProcessingParameterNumber.Integer,
                                         options.DEFAULT_SIEVE_PIXELS, minValue=0,
                                         maxValue=options.MAX_SIEVE_PIXELS),
            QgsProcessingParameterNumber(self.SELF_TRAINING,
                                         self.tr("Self-training rounds with confident pixels of "
                                                 "the scene (0 = none)"),
                                         QgsProcessingParameterNumber.Integer,
                                         options.DEFAULT_SELF_TRAINING_ROUNDS, minValue=0,
                                         maxValue=options.MAX_SELF_TRAINING_ROUNDS),
            QgsProcessingParameterNumber(self.CROSS_VALIDATION,
                                         self.tr("Cross-validation folds by polygon before "
                                                 "training (0 = none)"),
                                         QgsProcessingParameterNumber.Integer, 0, minValue=0,
                                         maxValue=options.MAX_FOLDS),
            QgsProcessingParameterNumber(self.SEED, self.tr("Random seed"),
                                         QgsProcessingParameterNumber.Integer, 0, minValue=0),
            QgsProcessingParameterEnum(self.DEVICE, self.tr("Device"), options=list(options.DEVICES),
                                       defaultValue=0),
            QgsProcessingParameterEnum(self.PRESET, self.tr("Preset"),
                                       options=list(options.PRESETS.values()),
                                       defaultValue=PRESETS.index(options.DEFAULT_PRESET)),
            QgsProcessingParameterEnum(self.BACKBONE, self.tr("Backbone"),
                                       options=list(options.BACKBONES.values()),
                                       defaultValue=BACKBONES.index(options.DEFAULT_BACKBONE)),
            QgsProcessingParameterFile(self.WEIGHTS,
                                       self.tr("Weights (official checkpoint or HyperAdapt backbone file)"),
                                       behavior=QgsProcessingParameterFile.File,
                                       fileFilter=WEIGHTS_FILE_FILTER, optional=True),
            QgsProcessingParameterFile(self.CONTINUE_FROM,
                                       self.tr("Continue from an adapter (a later round on the "
                                               "same backbone: {:.0%} of the steps)").format(
                                                   options.WARM_START_STEP_SHARE),
                                       behavior=QgsProcessingParameterFile.File,
                                       fileFilter=ADAPTER_FILE_FILTER, optional=True),
            QgsProcessingParameterBoolean(self.RANDOM_START,
                                          self.tr("Random start (no pretrained weights)"),
                                          defaultValue=False),
            QgsProcessingParameterString(self.SENSOR, self.tr("Sensor name (for the adapter library)"),
                                         optional=True),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)

        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_ADAPTER, self.tr("Adapter file"), fileFilter=ADAPTER_FILE_FILTER))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_CLASSIFICATION, self.tr("Classification"), optional=True, createByDefault=True))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_CONFIDENCE, self.tr("Confidence"), optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_REPORT, self.tr("Validation report"), fileFilter="HTML files (*.html)",
            optional=True, createByDefault=True))
        for key, label in ((self.OVERALL_ACCURACY, "Validation overall accuracy"),
                           (self.AVERAGE_ACCURACY, "Validation average accuracy"),
                           (self.KAPPA, "Validation kappa")):
            self.addOutput(QgsProcessingOutputNumber(key, self.tr(label)))
        self.addOutput(QgsProcessingOutputString(self.BACKBONE_USED, self.tr("Backbone used")))
        self.addOutput(QgsProcessingOutputNumber(self.CV_OVERALL_ACCURACY,
                                                 self.tr("Cross-validated overall accuracy")))

    # -- checks ---------------------------------------------------------------------------------
    def checkParameterValues(self, parameters, context):  # noqa: N802 (QGIS's name)
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        raster = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if raster is None or not raster.isValid():
            return False, self.tr("The hyperspectral raster cannot be read.")
        if raster.providerType() != "gdal":
            return False, self.tr("The hyperspectral raster must be a raster file readable by GDAL.")
        training = self.parameterAsVectorLayer(parameters, self.TRAINING, context)
        if training is None or not training.isValid():
            return False, self.tr("The training layer cannot be read.")
        field = self.parameterAsString(parameters, self.CLASS_FIELD, context)
        if training.fields().lookupField(field) < 0:
            return False, self.tr("The training layer '{}' has no field named '{}'.").format(
                training.name(), field)
        if training.featureCount() == 0:
            return False, self.tr("The training layer '{}' has no features.").format(training.name())
        problem = placement_problem(training, raster, context.transformContext())
        if problem:
            return False, self.tr(problem)
        problem = (options.window_size_problem(
            self.parameterAsInt(parameters, self.WINDOW_SIZE, context))
            or options.input_size_problem(self.parameterAsInt(parameters, self.INPUT_SIZE, context)))
        if problem:
            return False, self.tr(problem)
        if not self.parameterAsEnums(parameters, self.TARGETS, context):
            return False, self.tr("Choose at least one layer to adapt.")
        weights = self.parameterAsFile(parameters, self.WEIGHTS, context)
        if weights and not os.path.isfile(weights):
            return False, self.tr("The weights file {} does not exist.").format(weights)
        earlier = self.parameterAsFile(parameters, self.CONTINUE_FROM, context)
        if earlier and not os.path.isfile(earlier):
            return False, self.tr("The adapter file {} does not exist.").format(earlier)
        return True, ""

    # -- run ------------------------------------------------------------------------------------
    def settings_from_parameters(self, parameters, context):
        """FineTuneSettings from the parameter values (the engine checks them further)."""
        from ...models.settings import FineTuneSettings

        def choice(name, choices):
            return choices[self.parameterAsEnum(parameters, name, context)]

        targets = tuple(options.TARGETS[i]
                        for i in sorted(self.parameterAsEnums(parameters, self.TARGETS, context)))
        epochs = self.parameterAsInt(parameters, self.EPOCHS, context)
        return FineTuneSettings(
            method=choice(self.METHOD, METHODS),
            steps=self.parameterAsInt(parameters, self.STEPS, context),
            min_passes=self.parameterAsInt(parameters, self.MIN_PASSES, context),
            epochs=epochs if epochs > 0 else None,
            learning_rate=self.parameterAsDouble(parameters, self.LEARNING_RATE, context),
            lr_ratio=self.parameterAsDouble(parameters, self.LAMBDA, context),
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            window_size=self.parameterAsInt(parameters, self.WINDOW_SIZE, context),
            input_size=self.parameterAsInt(parameters, self.INPUT_SIZE, context),
            band_adaptation=choice(self.BAND_ADAPTATION, BAND_ADAPTATIONS),
            targets=targets,
            rank=self.parameterAsInt(parameters, self.RANK, context),
            val_fraction=self.parameterAsDouble(parameters, self.VAL_FRACTION, context),
            min_validation_pixels=self.parameterAsInt(parameters, self.MIN_VALIDATION_PIXELS,
                                                      context),
            refit=self.parameterAsBoolean(parameters, self.REFIT, context),
            pixel_dim=self.parameterAsInt(parameters, self.PIXEL_DIM, context),
            context_dropout=self.parameterAsDouble(parameters, self.CONTEXT_DROPOUT, context),
            class_weighting=choice(self.CLASS_WEIGHTING, CLASS_WEIGHTINGS),
            spectral_weight=self.parameterAsDouble(parameters, self.SPECTRAL_WEIGHT, context),
            spectral_context=self.parameterAsInt(parameters, self.SPECTRAL_CONTEXT, context),
            spectral_whitening=self.parameterAsBoolean(parameters, self.SPECTRAL_WHITENING,
                                                       context),
            classify_mode=choice(self.CLASSIFY_MODE, CLASSIFY_MODES),
            training_mode=choice(self.TRAINING_MODE, TRAINING_MODES),
            tile_step=self.parameterAsInt(parameters, self.TILE_STEP, context),
            segment_size=self.parameterAsInt(parameters, self.SEGMENT_SIZE, context),
            validate_vote=self.parameterAsBoolean(parameters, self.VALIDATE_VOTE, context),
            majority_size=self.parameterAsInt(parameters, self.MAJORITY_SIZE, context),
            sieve_pixels=self.parameterAsInt(parameters, self.SIEVE_PIXELS, context),
            self_training_rounds=self.parameterAsInt(parameters, self.SELF_TRAINING, context),
            seed=self.parameterAsInt(parameters, self.SEED, context),
            device=choice(self.DEVICE, options.DEVICES),
            backbone=choice(self.BACKBONE, BACKBONES),
            weights=self.parameterAsFile(parameters, self.WEIGHTS, context) or None,
            warm_start=self.parameterAsFile(parameters, self.CONTINUE_FROM, context) or None,
            random_start=self.parameterAsBoolean(parameters, self.RANDOM_START, context),
            preset=choice(self.PRESET, PRESETS),
        )

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS's name)
        require_engine()
        from ...models.jobs import fine_tune

        raster = raster_file(self.parameterAsRasterLayer(parameters, self.INPUT, context),
                             "hyperspectral raster")
        training = self.parameterAsVectorLayer(parameters, self.TRAINING, context)
        class_field = self.parameterAsString(parameters, self.CLASS_FIELD, context)
        adapter_path = self.parameterAsFileOutput(parameters, self.OUTPUT_ADAPTER, context)
        classification = destination_or_none(self, parameters, self.OUTPUT_CLASSIFICATION, context)
        confidence = destination_or_none(self, parameters, self.OUTPUT_CONFIDENCE, context)
        report = file_destination_or_none(self, parameters, self.OUTPUT_REPORT, context)
        check_geotiff_destination(classification, "classification")
        check_geotiff_destination(confidence, "confidence raster")
        if confidence and not classification:
            raise QgsProcessingException("A confidence raster needs a classification output too.")
        vector_path, layer_name = vector_file(training, context, feedback)
        colors, names = class_style_from_layer(training, class_field)
        if colors:
            feedback.pushInfo(f"Class colours from the style of '{training.name()}': "
                              f"{len(colors)} classes.")
        sensor = self.parameterAsString(parameters, self.SENSOR, context).strip() or None

        settings = run_engine_job(self.settings_from_parameters, parameters, context)
        folds = self.parameterAsInt(parameters, self.CROSS_VALIDATION, context)
        cross_validated = None
        if folds:
            from ...models.jobs import cross_validate

            feedback.pushInfo(f"Cross-validating with {folds} folds by polygon first.")
            with EngineFeedback(feedback=feedback) as engine_feedback:
                cross_validated = run_engine_job(
                    cross_validate, raster, vector_path, class_field, folds=folds,
                    settings=settings, layer_name=layer_name, class_colors=colors or None,
                    class_names=names or None, progress=engine_feedback.progress,
                    cancel=engine_feedback.cancel)
            for fold in cross_validated["folds"]:
                feedback.pushInfo(f"Fold {fold['fold']}: OA "
                                  f"{format_ratio(fold['overall_accuracy'])} on {fold['pixels']} "
                                  f"pixels of {fold['features']} features.")
            feedback.pushInfo(f"Cross-validated (pooled): OA "
                              f"{format_ratio(cross_validated['overall_accuracy'])}, AA "
                              f"{format_ratio(cross_validated['average_accuracy'])}, kappa "
                              f"{format_number(cross_validated['kappa'])}.")
        with EngineFeedback(feedback=feedback) as engine_feedback:
            result = run_engine_job(
                fine_tune, raster, vector_path, class_field, adapter_path, settings=settings,
                layer_name=layer_name, class_colors=colors or None, class_names=names or None,
                sensor=sensor,
                classification_path=classification, confidence_path=confidence, report_path=report,
                progress=engine_feedback.progress, cancel=engine_feedback.cancel)

        for note in result.notes:
            feedback.pushInfo(note)
        backbone = result.backbone.describe()
        if result.backbone.is_random_start:
            feedback.pushWarning("RANDOM START: the backbone was not pretrained; accuracy is far below "
                                 "what pretrained weights give.")
        metrics = result.metrics or {}
        feedback.pushInfo(
            f"Adapter {result.adapter_path} ({result.adapter_bytes / 1024:.0f} KiB), backbone: "
            f"{backbone}, {len(result.classes)} classes, {result.seconds:.0f} s; validation OA "
            f"{format_ratio(metrics.get('overall_accuracy'))}, "
            f"AA {format_ratio(metrics.get('average_accuracy'))}, "
            f"kappa {format_number(metrics.get('kappa'))}.")
        style_when_loaded(context, result.classification_path, classification=True)
        style_when_loaded(context, result.confidence_path, classification=False)
        return {
            self.OUTPUT_ADAPTER: result.adapter_path,
            self.OUTPUT_CLASSIFICATION: result.classification_path,
            self.OUTPUT_CONFIDENCE: result.confidence_path,
            self.OUTPUT_REPORT: result.report_path,
            self.OVERALL_ACCURACY: metrics.get("overall_accuracy"),
            self.AVERAGE_ACCURACY: metrics.get("average_accuracy"),
            self.KAPPA: metrics.get("kappa"),
            self.BACKBONE_USED: backbone,
            self.CV_OVERALL_ACCURACY: (cross_validated or {}).get("overall_accuracy"),
        }

