"""A classification result as a DICOM Structured Report: a TID 1500 Measurement Report (highdicom) in a
Comprehensive 3D SR that references the classified images.

One measurement group (tracked as 'mmfm classification') holds, for each class, its probability as a numeric
measurement (unit UCUM '1', no units) and, as a qualitative evaluation 'Finding', the predicted class. Class names
are coded in mmfm's private coding scheme ``99MMFM`` (value ``CLS<n>``, meaning the class name), as the standard
allows for concepts it has no code for. The model is the algorithm identification: its name, mmfm's version, and
its checksum as a parameter (``sha256:<hex>``).

Privacy: as for the SEG (:mod:`mmfm.data.io.dicom_seg`), only the patient and study identifiers the IOD requires
are kept. Nothing is logged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pydicom

from mmfm.data.io.dicom_seg import _required_identifiers_only
from mmfm.errors import ConfigError

SCHEME = "99MMFM"
TRACKING = "mmfm classification"


def class_code(index: int, name: str) -> object:
    """The private code of class ``index`` (its meaning: the class name)."""
    from highdicom.sr import CodedConcept

    return CodedConcept(value=f"CLS{index}", scheme_designator=SCHEME, meaning=name[:64] or f"class {index}")


def write_classification_sr(target: Path, probabilities: Mapping[str, float], sources: Sequence[pydicom.Dataset],
                            algorithm: str, version: str, checksum: str,
                            description: str = "mmfm classification", parameters: Sequence[str] = ()
                            ) -> pydicom.Dataset:
    """A TID 1500 report of ``probabilities`` (class name -> probability, in the model's class order) for the
    images ``sources``, written to ``target``; returns the dataset. ``parameters``: more algorithm parameters
    after the checksum (a zero-shot model's prompt templates)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if not probabilities or not sources:
        raise ConfigError("a classification report needs class probabilities and the images they are of")
    algo = hd.sr.AlgorithmIdentification(name=algorithm[:64], version=version[:64],
                                         parameters=[*([f"sha256:{checksum}"] if checksum else []),
                                                     *(p[:1024] for p in parameters)] or None)
    names = list(probabilities)
    measurements = [hd.sr.Measurement(name=class_code(i, n), value=float(probabilities[n]), unit=codes.UCUM.NoUnits,
                                      algorithm_id=algo) for i, n in enumerate(names)]
    best = max(range(len(names)), key=lambda i: probabilities[names[i]])
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=TRACKING), algorithm_id=algo,
        measurements=measurements,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(codes.DCM.Finding, class_code(best, names[best]))],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(ds) for ds in sources])
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="mmfm", manufacturer_name="mmfm", model_name=algorithm[:64]))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.ImagingProcedure, imaging_measurements=[group])
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(sources), content=report, series_instance_uid=hd.UID(), series_number=901,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="mmfm", series_description=description[:64])
    _required_identifiers_only(sr)
    sr.save_as(target, enforce_file_format=True)
    return sr


def read_classification_sr(path: str | Path) -> dict[str, float]:
    """Class name -> probability, read back from a report :func:`write_classification_sr` wrote."""
    import highdicom as hd

    group = hd.sr.srread(path).content.get_image_measurement_groups()[0]
    return {m.name.meaning: float(m.value) for m in group.get_measurements()}
