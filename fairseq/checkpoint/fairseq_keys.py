"""The config keys fairseq 0.12.2 knows, per group and component (generated data).

Written by ``scripts/gen_fairseq_keys.py`` from fairseq 0.12.2's dataclasses: the field
names of each ``FairseqConfig`` node (``GENERIC``) and of the dataclass fairseq reads for
each component name this package registers (``COMPONENTS[group][name]``; a name fairseq
does not have, or has without a dataclass, is absent). Do not edit by hand; rerun the script.
"""
from typing import Any, Dict, FrozenSet

GENERIC: Dict[str, FrozenSet[str]] = {
    'checkpoint': frozenset("""
        _name best_checkpoint_metric checkpoint_shard_count checkpoint_suffix continue_once
        finetune_from_model keep_best_checkpoints keep_interval_updates
        keep_interval_updates_pattern keep_last_epochs load_checkpoint_on_all_dp_ranks
        maximize_best_checkpoint_metric model_parallel_size no_epoch_checkpoints no_last_checkpoints
        no_save no_save_optimizer_state optimizer_overrides patience reset_dataloader
        reset_lr_scheduler reset_meters reset_optimizer restore_file save_dir save_interval
        save_interval_updates write_checkpoints_asynchronously
        """.split()),
    'common': frozenset("""
        _name aim_repo aim_run_hash all_gather_list_size amp amp_batch_retries amp_init_scale
        amp_scale_window azureml_logging bf16 cpu empty_cache_freq fp16 fp16_init_scale
        fp16_no_flatten_grads fp16_scale_tolerance fp16_scale_window log_file log_format
        log_interval memory_efficient_bf16 memory_efficient_fp16 min_loss_scale model_parallel_size
        no_progress_bar on_cpu_convert_precision plasma_path profile quantization_config_path
        reset_logging seed suppress_crashes tensorboard_logdir threshold_loss_scale tpu
        use_plasma_view user_dir wandb_project
        """.split()),
    'common_eval': frozenset("""
        _name model_overrides path post_process quiet results_path
        """.split()),
    'dataset': frozenset("""
        _name batch_size batch_size_valid combine_valid_subsets curriculum data_buffer_size
        dataset_impl disable_validation fixed_validation_seed gen_subset grouped_shuffling
        ignore_unused_valid_subsets max_tokens max_tokens_valid max_valid_steps num_shards
        num_workers required_batch_size_multiple required_seq_len_multiple shard_id
        skip_invalid_size_inputs_valid_test train_subset update_epoch_batch_itr
        update_ordered_indices_seed valid_subset validate_after_updates validate_interval
        validate_interval_updates
        """.split()),
    'distributed_training': frozenset("""
        _name broadcast_buffers bucket_cap_mb cpu_offload ddp_backend ddp_comm_hook device_id
        distributed_backend distributed_init_method distributed_no_spawn distributed_num_procs
        distributed_port distributed_rank distributed_world_size fast_stat_sync
        find_unused_parameters fix_batches_to_gpus fp16 fp32_reduce_scatter gradient_as_bucket_view
        heartbeat_timeout localsgd_frequency memory_efficient_fp16 no_reshard_after_forward
        not_fsdp_flatten_parameters nprocs_per_node pipeline_balance pipeline_checkpoint
        pipeline_chunks pipeline_decoder_balance pipeline_decoder_devices pipeline_devices
        pipeline_encoder_balance pipeline_encoder_devices pipeline_model_parallel
        slowmo_base_algorithm slowmo_momentum tpu use_sharded_state zero_sharding
        """.split()),
    'eval_lm': frozenset("""
        _name context_window output_word_probs output_word_stats softmax_batch
        """.split()),
    'generation': frozenset("""
        _name beam constraints decoding_format diverse_beam_groups diverse_beam_strength
        diversity_rate eos_token iter_decode_eos_penalty iter_decode_force_max_iter
        iter_decode_max_iter iter_decode_with_beam iter_decode_with_external_reranker lenpen lm_path
        lm_weight match_source_len max_len_a max_len_b min_len nbest no_beamable_mm no_early_stop
        no_repeat_ngram_size no_seed_provided prefix_size print_alignment print_step replace_unk
        retain_dropout retain_dropout_modules retain_iter_history sacrebleu sampling sampling_topk
        sampling_topp score_reference temperature unkpen unnormalized
        """.split()),
    'interactive': frozenset("""
        _name buffer_size input
        """.split()),
    'optimization': frozenset("""
        _name clip_norm lr max_epoch max_update sentence_avg skip_remainder_batch stop_min_lr
        stop_time_hours update_freq use_bmuf
        """.split()),
}

# The keys of fairseq's generic nodes that this package's lack, with fairseq's defaults
# (resolved): added to a checkpoint's cfg for fairseq, which reads some of them.
GENERIC_DEFAULTS: Dict[str, Dict[str, Any]] = {
    'checkpoint': {'checkpoint_shard_count': 1,
                 'checkpoint_suffix': '',
                 'continue_once': None,
                 'keep_interval_updates_pattern': -1,
                 'load_checkpoint_on_all_dp_ranks': False,
                 'model_parallel_size': 1,
                 'optimizer_overrides': '{}'},
    'common': {'aim_repo': None,
             'aim_run_hash': None,
             'all_gather_list_size': 16384,
             'amp_batch_retries': 2,
             'amp_init_scale': 128,
             'amp_scale_window': None,
             'azureml_logging': False,
             'empty_cache_freq': 0,
             'fp16_no_flatten_grads': False,
             'memory_efficient_bf16': False,
             'model_parallel_size': 1,
             'on_cpu_convert_precision': False,
             'plasma_path': '/tmp/plasma',
             'profile': False,
             'quantization_config_path': None,
             'reset_logging': False,
             'suppress_crashes': False,
             'tpu': False,
             'use_plasma_view': False},
    'common_eval': {},
    'dataset': {'curriculum': 0,
              'data_buffer_size': 10,
              'fixed_validation_seed': None,
              'grouped_shuffling': False,
              'num_shards': 1,
              'required_seq_len_multiple': 1,
              'shard_id': 0,
              'update_epoch_batch_itr': False,
              'update_ordered_indices_seed': False,
              'validate_after_updates': 0},
    'distributed_training': {'broadcast_buffers': False,
                           'bucket_cap_mb': 25,
                           'cpu_offload': False,
                           'ddp_comm_hook': 'none',
                           'distributed_init_method': None,
                           'distributed_no_spawn': False,
                           'distributed_num_procs': 1,
                           'distributed_port': -1,
                           'fast_stat_sync': False,
                           'fix_batches_to_gpus': False,
                           'fp16': False,
                           'fp32_reduce_scatter': False,
                           'gradient_as_bucket_view': False,
                           'heartbeat_timeout': -1,
                           'localsgd_frequency': 3,
                           'memory_efficient_fp16': False,
                           'no_reshard_after_forward': False,
                           'not_fsdp_flatten_parameters': False,
                           'nprocs_per_node': 1,
                           'pipeline_balance': None,
                           'pipeline_checkpoint': 'never',
                           'pipeline_chunks': 0,
                           'pipeline_decoder_balance': None,
                           'pipeline_decoder_devices': None,
                           'pipeline_devices': None,
                           'pipeline_encoder_balance': None,
                           'pipeline_encoder_devices': None,
                           'pipeline_model_parallel': False,
                           'slowmo_base_algorithm': 'localsgd',
                           'slowmo_momentum': None,
                           'tpu': False,
                           'use_sharded_state': False,
                           'zero_sharding': 'none'},
    'eval_lm': {},
    'generation': {'constraints': None,
                 'decoding_format': None,
                 'iter_decode_eos_penalty': 0.0,
                 'iter_decode_force_max_iter': False,
                 'iter_decode_max_iter': 10,
                 'iter_decode_with_beam': 1,
                 'iter_decode_with_external_reranker': False,
                 'print_alignment': None,
                 'retain_dropout_modules': None,
                 'retain_iter_history': False},
    'interactive': {},
    'optimization': {'skip_remainder_batch': False, 'use_bmuf': False},
}

_BPE_GPT2 = frozenset("""
    _name gpt2_encoder_json gpt2_vocab_bpe
    """.split())
_BPE_HF_BYTE_BPE = frozenset("""
    _name bpe_add_prefix_space bpe_merges bpe_vocab
    """.split())
_BPE_SENTENCEPIECE = frozenset("""
    _name sentencepiece_alpha sentencepiece_enable_sampling sentencepiece_model
    """.split())
_CRITERION_ADAPTIVE_LOSS = frozenset("""
    _name ddp_backend sentence_avg
    """.split())
_CRITERION_CROSS_ENTROPY = frozenset("""
    _name sentence_avg
    """.split())
_LR_SCHEDULER_COSINE = frozenset("""
    _name lr lr_period_updates lr_shrink max_update min_lr t_mult warmup_init_lr warmup_updates
    """.split())
_LR_SCHEDULER_FIXED = frozenset("""
    _name force_anneal lr lr_shrink warmup_updates
    """.split())
_LR_SCHEDULER_INVERSE_SQRT = frozenset("""
    _name lr warmup_init_lr warmup_updates
    """.split())
_LR_SCHEDULER_POLYNOMIAL_DECAY = frozenset("""
    _name end_learning_rate force_anneal lr power total_num_update warmup_updates
    """.split())
_MODEL_TRANSFORMER_LM = frozenset("""
    _name activation_dropout activation_fn adaptive_input adaptive_input_cutoff
    adaptive_input_factor adaptive_softmax_cutoff adaptive_softmax_dropout adaptive_softmax_factor
    add_bos_token attention_dropout base_layers base_shuffle base_sublayers
    char_embedder_highway_layers character_embedding_dim character_embeddings character_filters
    checkpoint_activations decoder_attention_heads decoder_embed_dim decoder_ffn_embed_dim
    decoder_input_dim decoder_layerdrop decoder_layers decoder_layers_to_keep decoder_learned_pos
    decoder_normalize_before decoder_output_dim decoder_xformers_att_config dropout
    layernorm_embedding max_target_positions min_params_to_wrap no_decoder_final_norm
    no_scale_embedding no_token_positional_embeddings offload_activations quant_noise_pq
    quant_noise_pq_block_size quant_noise_scalar relu_dropout scale_attn scale_fc scale_heads
    scale_resids share_decoder_input_output_embed tie_adaptive_proj tie_adaptive_weights
    tokens_per_sample tpu
    """.split())
_OPTIMIZER_ADAM = frozenset("""
    _name adam_betas adam_eps fp16_adam_stats lr tpu use_old_adam weight_decay
    """.split())
_OPTIMIZER_NAG = frozenset("""
    _name lr momentum weight_decay
    """.split())
_TASK_LANGUAGE_MODELING = frozenset("""
    _name add_bos_token batch_size batch_size_valid data data_buffer_size dataset_impl future_target
    max_target_positions output_dictionary_size pad_to_fixed_bsz pad_to_fixed_length past_target
    plasma_path sample_break_mode seed self_target shorten_data_split_list shorten_method
    tokens_per_sample tpu use_plasma_view
    """.split())
_TOKENIZER_SPACE = frozenset("""
    _name
    """.split())

COMPONENTS: Dict[str, Dict[str, FrozenSet[str]]] = {
    'bpe': {
        'gpt2': _BPE_GPT2,
        'hf_byte_bpe': _BPE_HF_BYTE_BPE,
        'sentencepiece': _BPE_SENTENCEPIECE,
    },
    'criterion': {
        'adaptive_loss': _CRITERION_ADAPTIVE_LOSS,
        'cross_entropy': _CRITERION_CROSS_ENTROPY,
    },
    'lr_scheduler': {
        'cosine': _LR_SCHEDULER_COSINE,
        'fixed': _LR_SCHEDULER_FIXED,
        'inverse_sqrt': _LR_SCHEDULER_INVERSE_SQRT,
        'polynomial_decay': _LR_SCHEDULER_POLYNOMIAL_DECAY,
    },
    'model': {
        'transformer_lm': _MODEL_TRANSFORMER_LM,
        'transformer_lm_baevski_gbw': _MODEL_TRANSFORMER_LM,
        'transformer_lm_baevski_wiki103': _MODEL_TRANSFORMER_LM,
        'transformer_lm_big': _MODEL_TRANSFORMER_LM,
        'transformer_lm_gbw': _MODEL_TRANSFORMER_LM,
        'transformer_lm_gpt': _MODEL_TRANSFORMER_LM,
        'transformer_lm_gpt2_big': _MODEL_TRANSFORMER_LM,
        'transformer_lm_gpt2_big_wide': _MODEL_TRANSFORMER_LM,
        'transformer_lm_gpt2_bigger': _MODEL_TRANSFORMER_LM,
        'transformer_lm_gpt2_medium': _MODEL_TRANSFORMER_LM,
        'transformer_lm_gpt2_small': _MODEL_TRANSFORMER_LM,
        'transformer_lm_gpt2_tiny': _MODEL_TRANSFORMER_LM,
        'transformer_lm_gpt3_13': _MODEL_TRANSFORMER_LM,
        'transformer_lm_gpt3_175': _MODEL_TRANSFORMER_LM,
        'transformer_lm_gpt3_2_7': _MODEL_TRANSFORMER_LM,
        'transformer_lm_gpt3_6_7': _MODEL_TRANSFORMER_LM,
        'transformer_lm_gpt3_large': _MODEL_TRANSFORMER_LM,
        'transformer_lm_gpt3_medium': _MODEL_TRANSFORMER_LM,
        'transformer_lm_gpt3_small': _MODEL_TRANSFORMER_LM,
        'transformer_lm_gpt3_xl': _MODEL_TRANSFORMER_LM,
        'transformer_lm_wiki103': _MODEL_TRANSFORMER_LM,
    },
    'optimizer': {
        'adam': _OPTIMIZER_ADAM,
        'nag': _OPTIMIZER_NAG,
    },
    'task': {
        'language_modeling': _TASK_LANGUAGE_MODELING,
    },
    'tokenizer': {
        'space': _TOKENIZER_SPACE,
    },
}
