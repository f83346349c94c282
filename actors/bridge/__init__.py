"""The bridge between real robots and the fleet: wire protocol, robot-side client and safety,
fleet-side gateway. Nothing is imported here, so the robot side needs no fleet packages."""
