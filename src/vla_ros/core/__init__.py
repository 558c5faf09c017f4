"""ROS-free logic of the camera and inference nodes: images, scene change, triggers, chunks."""
