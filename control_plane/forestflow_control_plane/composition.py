"""The composition root: the one place that turns `Settings` into concrete parts (the
platform, the gate's metrics source, the shadow targets, clients) and hands them to the
processes: the API, the worker, the mirror. Nothing below it reads the environment or picks
a concrete platform.

Parts are made on first use and kept for the process: one Redis pool, one platform (one
Kubernetes client on knative), and a metrics source only once a gate asks for numbers, so
an ungated rollout on knative needs no Prometheus.
"""

from __future__ import annotations

from functools import cached_property

import httpx
from redis import Redis
from rq import Queue

from forestflow_control_plane import names
from forestflow_control_plane.platforms import knative
from forestflow_control_plane.platforms.base import Platform
from forestflow_control_plane.platforms.local.gateway.app import Gateway
from forestflow_control_plane.platforms.local.platform import LocalPlatform
from forestflow_control_plane.rollouts.engine import Rollouts
from forestflow_control_plane.rollouts.gate_metrics import (
    MetricsSource,
    PrometheusSource,
    ScrapeSource,
)
from forestflow_control_plane.rollouts.in_place import InPlace
from forestflow_control_plane.rollouts.jobs import rq_schedule
from forestflow_control_plane.settings import Settings, SettingsError
from forestflow_control_plane.shadows.targets import ClusterTargets, GatewayTargets, ShadowTargets
from forestflow_control_plane.state.store import Store


class Parts:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def redis(self) -> Redis:
        return Redis.from_url(self.settings.redis_url)

    @cached_property
    def store(self) -> Store:
        return Store(self.redis)

    @cached_property
    def queue(self) -> Queue:
        return Queue(names.ROLLOUT_QUEUE, connection=self.redis)

    @cached_property
    def platform(self) -> Platform:
        if self.settings.platform == "local":
            return self._local_platform
        if self.settings.platform == "knative":
            return knative.from_settings(self.settings)
        raise SettingsError(
            f"FF_PLATFORM: unknown platform {self.settings.platform!r} (local, knative)"
        )

    @cached_property
    def _local_platform(self) -> LocalPlatform:
        return LocalPlatform(self.redis, self.settings.runtime_image, home=self.settings.home)

    def metrics_source(self) -> MetricsSource:
        """Prometheus when configured; otherwise the local platform's runtimes, scraped."""
        if self.settings.prometheus_url:
            return PrometheusSource(self.settings.prometheus_url)
        if self.settings.platform == "local":
            return ScrapeSource(self.redis, self._local_platform.replica_urls)
        raise SettingsError(
            f"FF_PROMETHEUS_URL: required on platform {self.settings.platform!r}"
            " (only the local platform's runtimes can be scraped directly)"
        )

    def shadow_targets(self) -> ShadowTargets:
        if self.settings.platform == "local":
            return GatewayTargets(self.settings.gateway_url, self.settings.domain)
        return ClusterTargets()

    @cached_property
    def _swap_client(self) -> httpx.Client:
        """The reconcile's client to replicas, for repairs of in-place swaps."""
        return httpx.Client()

    @cached_property
    def _rollouts(self) -> Rollouts:
        return Rollouts(
            self.store, self.platform, rq_schedule(self.queue), self.metrics_source,
            repair=self.in_place(self._swap_client).repair,
        )

    def rollouts(self) -> Rollouts:
        """Rollouts as the worker's jobs and reconcile run them."""
        return self._rollouts

    def in_place(self, client: httpx.Client) -> InPlace:
        return InPlace(self.store, self.platform, self.platform.replica_urls, client)

    def gateway(self) -> Gateway:
        """The local platform's ingress and activator, an ASGI app."""
        return Gateway(self.settings)

    def close(self) -> None:
        if "_swap_client" in self.__dict__:
            self._swap_client.close()
        if "redis" in self.__dict__:
            self.redis.close()
