"""Image stage: one firmware image per board and variant, the plan and dataset blobs placed after it in flash, and the
fit checks (required vs available SRAM and flash).
"""
