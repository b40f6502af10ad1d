"""The ClientApp each site's SuperNode runs: one FCL message in, one reply out.

The study's config comes with the run (``run_config["study"]``, written by
``fcl-ray deploy``, with ``run.sh --set`` overrides in ``run_config["set"]``); which site
this is and where its data live come from the SuperNode's own ``--node-config``, checked
here first (:func:`~fcl_ray.flower.nodes.site_settings`): a node config that does not fit the
study is refused at the site with one line. The site's
state between rounds lives on its own disk (:mod:`fcl_ray.flower.site_runner`); what the
reply carries was checked against the message contract before it was built.
"""
from __future__ import annotations

import json

from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp

from fcl_ray.flower import records as R
from fcl_ray.flower.deploy import study_from_run_config
from fcl_ray.flower.nodes import site_settings

app = ClientApp()


def _task_reply(runner, task: dict, content: RecordDict) -> RecordDict:
    """Run ``task`` on ``runner``; its reply's records."""
    kind, method = task["kind"], task.get("method", "")
    fold, n = int(task.get("fold", 0)), int(task.get("n_labeled", 0))
    weights, config = R.weights_from(content), R.round_config_from(content)
    if kind == "start_pretraining":
        return RecordDict({R.RESULT: R.scalars_record(R.release_scalars(runner.start_pretraining(
            method, fold, bool(task.get("resume", False)))))})
    if kind == "pretrain_round":
        return R.update_records(runner.pretrain_round(method, fold, int(task["round"]),
                                                      weights, R.pool_from(content),
                                                      int(task.get("keep_from", 0)), config))
    if kind == "finish_pretraining":
        return RecordDict({R.RESULT: R.scalars_record(
            runner.finish_pretraining(method, fold, weights, int(task["round"])))})
    if kind == "start_finetune":
        return RecordDict({R.RESULT: R.scalars_record(runner.start_finetune(method, fold, n))})
    if kind == "finetune_round":
        return R.update_records(runner.finetune_round(method, fold, n, weights, config))
    if kind == "validate_global":
        return RecordDict({R.RESULT: R.scalars_record(
            {"dice_mean": runner.validate_global(method, fold, n, weights)})})
    if kind == "finish_finetune":
        return RecordDict({R.RESULT: R.scalars_record(
            runner.finish_finetune(method, fold, n, weights))})
    if kind == "finetune_local":
        return RecordDict({R.RESULT: R.scalars_record(runner.finetune_local(method, fold, n))})
    raise ValueError(f"unknown task kind {kind!r}")


def _site_machine(threads: int) -> dict:
    """The machine this site computes on, as the Ray runtime records a client's: CPU, torch,
    and the torch threads its :class:`~fcl_ray.federation.site.ClientSite` will set (its
    ``--node-config threads``); the coordinator writes it to machine.json."""
    import torch

    from fcl_ray.machine import describe_machine

    torch.set_num_threads(max(1, threads))   # as ClientSite sets them for every task
    return describe_machine("cpu")           # a Flower site computes on its CPU


@app.query()
def handle(msg: Message, context: Context) -> Message:
    """Every task of the study arrives as a ``query`` message with a ``task`` record."""
    from fcl_ray.config import ConfigError
    from fcl_ray.protocol.messages import MessageError

    task = dict(msg.content.config_records[R.TASK])
    try:
        # The study as the ServerApp reads it: the deployed one with run.sh's --set overrides.
        cfg_dict = study_from_run_config(context.run_config)
        settings = site_settings(context.node_config, cfg_dict["data"]["clients"])
        if task["kind"] == "hello":   # before any data is read: who am I, is my config sane
            return Message(RecordDict({R.RESULT: ConfigRecord(
                {"site": settings.site, "data_root": str(settings.data_root),
                 "machine": json.dumps(_site_machine(settings.threads))})}), reply_to=msg)
        # Here, not at the top: torch and MONAI load once the node config is known good.
        from fcl_ray.flower.site_runner import SiteRunner

        content = _task_reply(SiteRunner(cfg_dict, settings), task, msg.content)
    except (ConfigError, MessageError) as err:   # refused here: nothing of it is sent
        return Message(Error(code=R.REFUSED, reason=str(err)), reply_to=msg)
    return Message(content, reply_to=msg)
