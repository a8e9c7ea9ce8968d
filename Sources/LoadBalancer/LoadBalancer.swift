import Balancing
