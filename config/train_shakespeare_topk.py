# A TopK LM on the complete works with GPT-2's BPE (python prepare.py shakespeare): a single-GPU run
# (103 s on one H100, compiled, bf16, with --series=False). 1.4M training tokens is small for a 50k
# vocabulary, so the model is small, dropout is high and training stops before it memorises the text.
out_dir = 'out-shakespeare-topk'
eval_interval = 250
eval_iters = 100
log_interval = 10
ckpt_interval = 500

dataset = 'shakespeare'
gradient_accumulation_steps = 1
batch_size = 32
block_size = 256

n_layer = 6
n_head = 6
n_embd = 384
dropout = 0.2
topk = 96  # a quarter of the residual stream, as in train_shakespeare_char_topk.py
n_nontopk = 2

learning_rate = 6e-4
max_iters = 3000
lr_decay_iters = 3000
min_lr = 6e-5
beta2 = 0.99
warmup_iters = 100
