
m_v2r
2language_model.layers.0.mlp.down_proj.quant_recipe2language_model.layers.1.mlp.down_proj.quant_recipe*vision*08@PX`h