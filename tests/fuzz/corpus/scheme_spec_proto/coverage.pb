
top10š™™™™™¹?"	*lm_head*H