"""The VLA policy: PaliGemma trunk, action token, LSTM head, model directories. No ROS here."""
