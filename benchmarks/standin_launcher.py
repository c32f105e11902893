"""CONTROL-PLANE BENCHMARK ONLY: a run launcher that starts no run worker.

On the cluster a run is a Kubernetes Job on another node; the machine with the daemon only queues and
launches it, then receives its events. This launcher stands in for the worker: it writes the events a
real `process_batch` run writes (run start, one materialization per asset for the run's partition,
engine events up to the count a real run writes: 67, measured with `diary run` on two clips), sleeping
`run_seconds` in place of the model, then run success. No audio is read and nothing is transcribed.

Used by benchmarks/control_plane.py through the instance's `run_launcher` setting.
"""

import threading
import time
from collections.abc import Mapping
from typing import Any

from dagster import AssetKey, AssetMaterialization, Field
from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
from dagster._core.launcher.base import LaunchRunContext, RunLauncher
from dagster._serdes import ConfigurableClass
from dagster._serdes.config_class import ConfigurableClassData

BATCH_ASSETS = ("raw_audio", "validated_audio", "transcripts", "diary_notes")


class StandInRunLauncher(RunLauncher, ConfigurableClass):
    def __init__(self, inst_data: ConfigurableClassData | None = None, run_seconds: float = 20.0, events_per_run: int = 67):
        self._inst_data = inst_data
        self.run_seconds = run_seconds
        self.events_per_run = events_per_run
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict:
        return {"run_seconds": Field(float, is_required=False, default_value=20.0),
                "events_per_run": Field(int, is_required=False, default_value=67)}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]) -> "StandInRunLauncher":
        return cls(inst_data=inst_data, **config_value)

    def launch_run(self, context: LaunchRunContext) -> None:
        threading.Thread(target=self._stand_in, args=(context.dagster_run,), daemon=True).start()

    def _stand_in(self, run) -> None:
        instance = self._instance
        partition = run.tags.get("dagster/partition")
        assets = [key.to_user_string() for key in run.asset_selection] if run.asset_selection else list(BATCH_ASSETS)
        instance.report_dagster_event(DagsterEvent(DagsterEventType.PIPELINE_START.value, run.job_name), run.run_id)
        filler = max(0, self.events_per_run - 2 - len(assets))
        for index in range(filler // 2):
            instance.report_engine_event(f"stand-in step event {index}", run)
        time.sleep(self.run_seconds)
        for asset in assets:
            materialization = AssetMaterialization(AssetKey(asset), partition=partition)
            event = DagsterEvent(DagsterEventType.ASSET_MATERIALIZATION.value, run.job_name, step_key=asset,
                                 event_specific_data=StepMaterializationData(materialization))
            instance.report_dagster_event(event, run.run_id)
        for index in range(filler - filler // 2):
            instance.report_engine_event(f"stand-in step event {filler // 2 + index}", run)
        instance.report_dagster_event(DagsterEvent(DagsterEventType.PIPELINE_SUCCESS.value, run.job_name), run.run_id)

    def terminate(self, run_id: str) -> bool:
        return False
