#!/usr/bin/env bash
# GRPO on GSM8K with verl 0.9.1's V1 trainer, on the batches a depo service serves.
#
#   pip install verl==0.9.1 TransferQueue vllm ./clients    # your usual verl install + the client
#   python examples/verl09_upload.py ~/data/gsm8k/train.parquet grpo-gsm8k   # once: dataset + run
#   DEPO_URL=http://depo:8000 bash examples/verl09_grpo.sh
#
# The parquets are verl's own (examples/data_preprocess/gsm8k.py), whose rows carry
# extra_info.index; the upload script sends those ids, so the service's ids are the parquet's.
# Everything below the "depo" comment is what depo adds to verl's GSM8K GRPO command.
set -euo pipefail
N=8   # rollout.n = the run's group_size

python -m verl.trainer.main_ppo \
    algorithm.adv_estimator=grpo \
    data.train_files="$HOME/data/gsm8k/train.parquet" \
    data.val_files="$HOME/data/gsm8k/test.parquet" \
    data.train_batch_size=256 \
    data.max_prompt_length=512 \
    data.max_response_length=1024 \
    actor_rollout_ref.model.path=Qwen/Qwen2.5-3B-Instruct \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.actor.ppo_mini_batch_size=64 \
    actor_rollout_ref.actor.use_kl_loss=True \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.n=$N \
    trainer.logger='["console","wandb"]' \
    trainer.project_name=depo \
    trainer.experiment_name=gsm8k-grpo-depo \
    trainer.n_gpus_per_node=8 \
    trainer.nnodes=1 \
    trainer.total_epochs=15 \
    `# depo: the dataset class serves the run's batches, the replay buffer reports every group` \
    data.custom_cls.path=pkg://depo_client.verl_v1 \
    data.custom_cls.name=DepoDataset \
    +data.depo.run=grpo-gsm8k \
    +data.depo.url="${DEPO_URL:?set DEPO_URL}" \
    data.dataloader_num_workers=0 \
    trainer.v1.sampler.custom_sampler.path=pkg://depo_client.verl_v1 \
    trainer.v1.sampler.custom_sampler.name=DepoReplayBuffer \
    "$@"
